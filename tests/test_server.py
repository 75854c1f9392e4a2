"""`ganomaly serve` as a real process on a loopback port, spoken to over HTTP; and the one-score-
everywhere check, for every model: API, `ganomaly predict`, ONNX, TorchScript and the server
agree."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from ganomaly import GANomalyDetector
from ganomaly.images import load_image, preprocess
from tests._trained import EVERY_MODEL, GANOMALY_ONLY, exported, running_server, sample_images

LIMITS = ["--max-upload-mb", "0.25", "--max-pixels", "1000000", "--max-files", "4"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sample_images(tmp_path_factory.mktemp("server-images"))


@pytest.fixture(scope="module")
def server(run_dir: Path):  # type: ignore[no-untyped-def]
    with running_server(run_dir, *LIMITS) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def upload(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def assert_still_serving(client: httpx.Client, image: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.post("/v1/score", files=upload(image)).status_code == 200


@EVERY_MODEL
def test_one_image_one_score_everywhere(
    server: httpx.Client,
    run_dir: Path,
    model_name: str,
    images: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """PNG (40x40 RGB) and JPEG (31x23 grey) files, model 16x16 grey: API, predict subprocess,
    ONNX and TorchScript fed by the documented preprocessing, and the server."""
    import onnxruntime as ort

    detector = GANomalyDetector.load(run_dir)
    api = detector.score(images).normalized_score

    command = [sys.executable, "-m", "ganomaly", "predict", str(run_dir), *map(str, images)]
    result = subprocess.run([*command, "--json", "-", "--no-progress"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli = [row["normalized_score"] for row in json.loads(result.stdout)["results"]]

    response = server.post("/v1/score", files=upload(*images[:4]))
    response2 = server.post("/v1/score", files=upload(*images[4:]))
    assert response.status_code == response2.status_code == 200
    rows = response.json()["results"] + response2.json()["results"]
    served = [r["normalized_score"] for r in rows]

    meta_size = tuple(detector.config.image_hw())
    x = torch.cat([preprocess(load_image(p, 1)[None], meta_size, 1, "bilinear") for p in images])
    session = ort.InferenceSession(str(exported(tmp_path_factory, "onnx", model_name)))
    onnx_scores = session.run(["normalized_score"], {"image": x.numpy()})[0]
    scripted = torch.jit.load(str(exported(tmp_path_factory, "torchscript", model_name)))
    with torch.inference_mode():
        script_scores = scripted(x)[1].numpy()

    np.testing.assert_allclose(cli, api, rtol=0, atol=1e-5)
    np.testing.assert_allclose(served, api, rtol=0, atol=1e-5)
    np.testing.assert_allclose(script_scores, api, rtol=0, atol=1e-5)
    np.testing.assert_allclose(onnx_scores, api, rtol=0, atol=1e-4)


@EVERY_MODEL
def test_score_several_images_and_model_card(
    server: httpx.Client, run_dir: Path, model_name: str, images: list[Path]
) -> None:
    detector = GANomalyDetector.load(run_dir)
    response = server.post("/v1/score", files=upload(images[0], images[1], images[2]))
    assert response.status_code == 200
    body = response.json()
    assert body["threshold"] == detector.threshold_
    assert [r["filename"] for r in body["results"]] == [p.name for p in images[:3]]
    expected = detector.score(images[:3])
    pairs = zip(body["results"], expected.score, expected.is_anomaly, strict=True)
    for row, score, flag in pairs:
        assert set(row) == {"filename", "score", "normalized_score", "is_anomaly"}
        assert row["score"] == pytest.approx(float(score), rel=1e-6)
        assert row["is_anomaly"] is bool(flag)
    card = server.get("/v1/model").json()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert card["data"] == "digits" and card["target_class"] == 0
    assert card["model"] == model_name
    assert card["image_size"] == [16, 16] and card["channels"] == 1
    assert card["threshold"] == detector.threshold_
    assert card["metrics"]["auroc"] == pytest.approx(metrics["auroc"])
    assert card["limits"] == {"max_upload_bytes": 262144, "max_pixels": 1000000, "max_files": 4}
    schema = server.get("/openapi.json").json()
    assert {"/v1/score", "/v1/model", "/healthz"} <= set(schema["paths"])
    page = server.get("/")
    assert page.status_code == 200 and "ganomaly" in page.text
    assert server.get("/static/app.js").status_code == 200


@EVERY_MODEL
def test_maps_and_reconstruction_as_png(server: httpx.Client, images: list[Path]) -> None:
    query = "?anomaly_map=true&reconstruction=true"
    response = server.post("/v1/score" + query, files=upload(images[0]))
    assert response.status_code == 200
    row = response.json()["results"][0]
    for key, mode in (("anomaly_map_png", "RGB"), ("input_png", "L"), ("reconstruction_png", "L")):
        prefix, data = row[key].split(",", 1)
        assert prefix == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and image.size == (16, 16) and image.mode == mode


@GANOMALY_ONLY
def test_bad_uploads_get_clear_4xx_and_the_server_keeps_serving(
    server: httpx.Client, images: list[Path], tmp_path: Path
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.png"  # 2000 x 1000 = 2 Mpx, a few KB as PNG
    Image.new("L", (2000, 1000)).save(huge)
    noise = tmp_path / "noise.png"  # 300 KB, over the 0.25 MiB upload limit
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (320, 320, 3), np.uint8)).save(noise)
    cases = [
        (upload(text), 415, "notes.png: not a readable image"),
        (upload(empty), 400, "empty.png: empty file"),
        (upload(huge), 413, "huge.png: 2000x1000 pixels is over the limit of 1,000,000"),
        (upload(noise), 413, "the upload limit is 262,144 bytes"),
        (upload(*[images[0]] * 5), 400, "Too many files"),
        ([], 400, "no image"),
    ]
    for files, status, detail in cases:
        response = server.post("/v1/score", files=files) if files else server.post("/v1/score")
        assert response.status_code == status, (detail, response.text)
        assert response.headers["content-type"] == "application/json"
        assert detail in response.json()["detail"]
        assert_still_serving(server, images[0])
    # a text field instead of a file, and a chunked body (no Content-Length) over the cap
    response = server.post("/v1/score", data={"file": "hello"})
    assert response.status_code == 400 and "file uploads" in response.json()["detail"]

    def chunks():  # type: ignore[no-untyped-def]
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for _ in range(40):
            yield b"x" * 16384
        yield b"\r\n--b--\r\n"

    response = server.post(
        "/v1/score", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413 and "upload limit" in response.json()["detail"]
    assert response.status_code < 500
    assert_still_serving(server, images[0])


@GANOMALY_ONLY
def test_concurrent_requests_get_the_same_scores(server: httpx.Client, images: list[Path]) -> None:
    expected = server.post("/v1/score", files=upload(*images[:3])).json()

    def one(_: int) -> dict[str, object]:
        return server.post("/v1/score", files=upload(*images[:3])).json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(16)))
    assert all(answer == expected for answer in answers)


def test_api_key_guards_the_v1_routes(run_dir: Path, images: list[Path]) -> None:
    env = {"GANOMALY_TEST_KEY": "s3cret-key"}
    with (
        running_server(run_dir, "--api-key-env", "GANOMALY_TEST_KEY", env=env) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            response = client.post("/v1/score", files=upload(images[0]), headers=headers)
            assert response.status_code == 401
            assert "API key" in response.json()["detail"]
        assert client.get("/v1/model").status_code == 401
        for headers in ({"X-API-Key": "s3cret-key"}, {"Authorization": "Bearer s3cret-key"}):
            response = client.post("/v1/score", files=upload(images[0]), headers=headers)
            assert response.status_code == 200
    missing = subprocess.run(
        [sys.executable, "-m", "ganomaly", "serve", str(run_dir), "--api-key-env", "NO_SUCH_VAR_X"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.startswith("ganomaly: error: --api-key-env NO_SUCH_VAR_X")


@GANOMALY_ONLY
def test_one_bad_file_among_good_ones_is_reported_with_the_results(
    server: httpx.Client, images: list[Path], tmp_path: Path
) -> None:
    """One good and one truncated PNG: 200, a score for the good one, an error naming the
    upload (not a server path) for the bad one; alone, the truncated PNG gets 422."""
    whole = images[0].read_bytes()
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(whole[: len(whole) // 2])  # header intact, pixel data cut
    response = server.post("/v1/score", files=upload(images[0], truncated))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["n_errors"] == 1
    good, bad = body["results"]
    assert good["filename"] == images[0].name and isinstance(good["score"], float)
    assert "error" not in good
    assert bad["filename"] == "cut.png" and set(bad) == {"filename", "error"}
    assert bad["error"].startswith("cut.png: ") and "/tmp" not in bad["error"]
    alone = server.post("/v1/score", files=upload(truncated))
    assert alone.status_code == 422 and alone.json()["detail"].startswith("cut.png: ")
