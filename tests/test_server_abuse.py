"""`ganomaly serve` under abuse, CI-sized: the fuzz cases of benchmarks/load_test.py (seeded)
against one real server process with small limits, a concurrent burst, the upload cap acting
before the body is read, and abuse without the API key. The full-size run with throughput and
memory figures is `python benchmarks/load_test.py`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._trained import load_test_module

LIMITS = {"max_upload_mb": 0.25, "max_pixels": 1_000_000, "max_files": 4, "body_timeout": 1.5}
MAX_UPLOAD_BYTES = 262_144
MODEL_HW = (16, 16)  # tests._trained.TINY


lt = load_test_module()
Server = lt.Server


@pytest.fixture(scope="module")
def server(run_dir: Path) -> Iterator[Server]:
    with lt.serve(run_dir, *lt.server_args(**LIMITS)) as server:
        yield server
        # after every test of the module: nothing the clients did was a server fault
        assert server.process.poll() is None, server.output()
        assert "Traceback" not in server.output(), server.output()


def test_limits_are_the_ones_the_cases_assume(server: Server) -> None:
    card = httpx.get(server.url + "/v1/model", timeout=30).json()
    assert card["limits"]["max_upload_bytes"] == MAX_UPLOAD_BYTES
    assert tuple(card["image_size"]) == MODEL_HW


def test_fuzzed_requests_get_their_4xx_and_never_a_5xx(server: Server) -> None:
    """~200 seeded cases of every kind (4 at a time): each gets its expected status, each error
    is JSON with a `detail`, and the server still answers afterwards."""
    cases = lt.fuzz_cases(210, 7, MODEL_HW, MAX_UPLOAD_BYTES, LIMITS["max_pixels"], 4)
    result = lt.run_fuzz(server.url, cases)
    assert result["server_errors_5xx"] == 0
    assert result["problems"] == [] and result["wrong_answers"] == 0
    assert len(result["by_kind"]) == 20  # every kind was sent (each at least 10 times)
    assert lt.healthy(server.url)


def test_concurrent_burst_is_all_answered(server: Server) -> None:
    images = lt.load_images(MODEL_HW, 1)
    result = lt.run_load(server.url, images, clients=8, max_requests=200, seconds=30.0)
    assert result["by_status"] == {"200": 200}


def test_declared_length_over_the_cap_is_refused_before_the_body(server: Server) -> None:
    """A request claiming 10 GB but sending 64 bytes: 413 at once (not the body timeout's 408,
    not a wait for the rest), and the connection is closed."""
    head = (
        f"POST /v1/score HTTP/1.1\r\nHost: {lt.HOST}\r\nContent-Length: {10**10}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    answer = lt.raw_request(server.url, head.encode() + b"-" * 64, timeout=10)
    detail = answer.detail() or ""
    assert answer.status == 413 and "10,000,000,000 bytes: the upload limit is 262,144" in detail
    assert answer.seconds < 1.0  # under the 1.5 s body timeout: the body was never awaited


def test_streamed_body_is_cut_off_at_the_cap(server: Server) -> None:
    """64 MiB sent chunked (no Content-Length): the server answers 413 soon after the cap and
    stops reading; the client gets to write only a little more than the cap (socket buffers),
    and the server's memory does not grow by the body size."""
    payload = lt.chunked_upload(64 * 2**20)
    rss_before = lt.rss_mb(server.process.pid)
    answer = lt.raw_request(server.url, payload, timeout=30)
    rss_after = lt.rss_mb(server.process.pid)
    assert answer.status == 413 and "upload limit is 262,144 bytes" in (answer.detail() or "")
    assert answer.sent < 16 * 2**20, answer.sent  # refused long before the 64 MiB were sent
    assert rss_after - rss_before < 16, (rss_before, rss_after)


@pytest.fixture(scope="module")
def guarded(run_dir: Path) -> Iterator[Server]:
    env = {"GANOMALY_ABUSE_KEY": "k3y-for-abuse"}
    with lt.serve(run_dir, "--api-key-env", "GANOMALY_ABUSE_KEY", env=env) as server:
        yield server
        assert "Traceback" not in server.output(), server.output()


def test_without_the_key_no_upload_is_even_read(guarded: Server) -> None:
    """Abusive uploads without the key all get 401 before their body is parsed: a pixel bomb,
    random bytes, too many files, a stalled or endless body are never looked at.
    (tests/test_server.py covers missing/wrong keys on valid requests and the right keys.)"""
    kinds = {"random-bytes", "pixel-bomb", "too-many-files", "odd-valid-image", "stalled-body"}
    kinds |= {"chunked-over-limit", "truncated-png", "wrong-part-type"}
    cases = [c for c in lt.fuzz_cases(80, 11, MODEL_HW, 2**20, 10**6, 4) if c.kind in kinds]
    for case in cases:
        case.expect = (401,)
    result = lt.run_fuzz(guarded.url, cases)
    assert result["problems"] == [] and result["by_status"] == {"401": len(cases)}
    slowest_s = result["slowest_ms"] / 1000
    assert slowest_s < 5.0  # a stalled body was not waited for (its timeout is 30 s here)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer"},
        {"Authorization": "Basic azN5LWZvci1hYnVzZQ=="},  # the right key, the wrong scheme
        {"X-API-Key": "k3y-for-abus"},  # a prefix
        {"X-API-Key": "k3y-for-abuse-and-more"},
        {"X-API-Key": "K3Y-FOR-ABUSE"},
        {"X-API-Key": "k3y-for-abuse\u00e9"},  # non-ASCII: compared as bytes, not a 500
        {"X-API-Key": ""},
    ],
)
def test_near_miss_keys_are_refused(
    guarded: Server,
    headers: dict[str, str],
) -> None:
    image = lt.load_images(MODEL_HW, 1)[0]
    for path in ("/v1/score", "/v1/score?api_key=k3y-for-abuse"):  # never from the URL
        response = httpx.post(
            guarded.url + path, files=[("file", ("x.png", image, "image/png"))],
            headers={k: v.encode("latin-1") for k, v in headers.items()}, timeout=30,
        )  # fmt: skip
        assert response.status_code == 401, response.text
        assert "API key" in response.json()["detail"]
    ok = httpx.post(
        guarded.url + "/v1/score", files=[("file", ("x.png", image, "image/png"))],
        headers={"Authorization": "bearer k3y-for-abuse"}, timeout=30,
    )  # fmt: skip
    assert ok.status_code == 200  # the scheme name is case-insensitive (RFC 9110)
