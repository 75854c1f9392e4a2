"""Hostile and messy inputs: every one gives a one-line error naming the file (exit code 2 from
the CLI), or a documented conversion; none gives a traceback or a hang.

Matrix: image files (`load_image`), folders (`find_images`, `--data folder` / `mvtec` with and
without `--skip-bad`, `--max-pixels`, `--val-dir`), IDX files, model files and checkpoints,
then property-based tests of the image, upload and IDX readers and of the scorer.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from ganomaly.cli import main
from ganomaly.data.errors import DataError
from ganomaly.data.folders import load_mvtec
from ganomaly.data.idx import read_idx
from ganomaly.detector import GANomalyDetector
from ganomaly.images import ImageError, find_images, load_image, preprocess
from tests._trained import FASTEST
from tests.synthetic_data import (
    idx_bytes,
    write_idx_dataset,
    write_mvtec_category,
    write_user_folder,
)

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers ----------------------------------------------------------------------------------
def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but whose data is 100 bytes: a
    decoder that got past the header would fail with "truncated", not with the limit."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(b"\0" * 100))
    return b"\x89PNG\r\n\x1a\n" + header + data + png_chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(h: int = 24, w: int = 20) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's error: the stderr text from the `ganomaly: error:` line on."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "ganomaly: error: " in err, err
    return err[err.index("ganomaly: error: ") :]


def finishes(function: Callable[[], object], seconds: float = 10.0) -> object:
    """Run `function` in a daemon thread: a hang fails the test instead of freezing it."""
    result: list[object] = []

    def target() -> None:
        try:
            result.append(function())
        except BaseException as error:  # handed to the caller below
            result.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (it hangs)"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


# -- image files: refused with the file and the reason ---------------------------------------
def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _truncated(fmt: str) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(encoded(noise(), fmt)[:-100])


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path.name)  # points at itself


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere.png")


REFUSED = {
    "zero-byte file": ("a.png", _write(b""), "empty file"),
    "truncated PNG": ("a.png", _truncated("PNG"), "not a readable image (image file is truncated"),
    "truncated JPEG": (
        "a.jpg",
        _truncated("JPEG"),
        "not a readable image (image file is truncated",
    ),
    "text named .png": (
        "a.png",
        _write(b"just some text\n"),
        "not a readable image (unknown format, or damaged)",
    ),
    "PNG signature only": ("a.png", _write(b"\x89PNG\r\n\x1a\n"), "unknown format, or damaged"),
    "decompression bomb 20000x20000": (
        "bomb.png",
        _write(png_claiming(20_000, 20_000)),
        "400,000,000 pixels is over the limit of 50,000,000",
    ),
    "bomb under Pillow's own limit": (
        "bomb.png",
        _write(png_claiming(8_000, 8_000)),
        "8000x8000 pixels is over the limit of 50,000,000",
    ),
    "directory named .png": ("d.png", lambda p: p.mkdir(), "is a directory, not an image"),
    "FIFO named .png": (
        "f.png",
        lambda p: os.mkfifo(p),
        "not a regular file (a FIFO, socket or device)",
    ),
    "symlink to itself": ("loop.png", _symlink_loop, "too many levels of symbolic links"),
    "dangling symlink": ("gone.png", _dangling, "broken symbolic link"),
    "missing file": ("absent.png", lambda p: None, "no such file"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_image_file_is_refused_naming_the_file(case: str, tmp_path: Path) -> None:
    name, make, reason = REFUSED[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageError) as caught:
        finishes(lambda: load_image(path, 1))
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and reason in message
    assert "\n" not in message


@pytest.mark.skipif(AS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    noise().save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageError, match="locked.png: permission denied"):
            load_image(path, 3)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_pixel_limit_is_read_from_the_header_and_configurable(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(100, 100))  # its data is not a 100x100 image at all
    with pytest.raises(ImageError, match=r"100x100 pixels is over the limit of 5,000$"):
        load_image(path, 3, max_pixels=5_000)
    # Under the limit, decoding starts and finds the body short: the limit came first above.
    with pytest.raises(ImageError, match="truncated"):
        load_image(path, 3, max_pixels=10_000)


def test_pixel_limit_above_pillows_own_is_capped_by_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(20_000, 20_000))
    limit = 2 * Image.MAX_IMAGE_PIXELS  # Pillow's hard limit, as documented in ganomaly.images
    with pytest.raises(ImageError, match=f"400,000,000 pixels is over the limit of {limit:,}"):
        load_image(path, 3, max_pixels=10**12)


# -- image files: documented conversions -------------------------------------------------------
def test_one_pixel_image_is_resized_like_any_other(tmp_path: Path) -> None:
    Image.new("L", (1, 1), 200).save(tmp_path / "dot.png")
    array = load_image(tmp_path / "dot.png", 1)
    assert array.shape == (1, 1, 1) and array[0, 0, 0] == 200
    x = preprocess(array[None], (16, 16), 1)
    assert x.shape == (1, 1, 16, 16)
    assert torch.allclose(x, torch.full_like(x, 200 / 255 * 2 - 1))


CONVERSIONS = {
    # name: (file name, writer, channels, expected (C, H, W) pixel at [:, 0, 0], tolerance)
    "16-bit grey": (
        "a.png",
        lambda p: Image.fromarray(np.full((4, 5), 100 * 257, np.uint16)).save(p),
        1,
        [100],
        0,
    ),
    "palette": (
        "a.png",
        lambda p: _palette_image().save(p),
        3,
        [10, 200, 30],
        0,
    ),
    "palette with transparency": (
        "a.png",
        lambda p: _palette_image().save(p, transparency=0),
        3,
        [10, 200, 30],
        0,
    ),
    "RGBA (alpha dropped)": (
        "a.png",
        lambda p: Image.new("RGBA", (4, 5), (10, 20, 30, 0)).save(p),
        3,
        [10, 20, 30],
        0,
    ),
    "RGBA to grey": (
        "a.png",
        lambda p: Image.new("RGBA", (4, 5), (10, 20, 30, 0)).save(p),
        1,
        [round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)],
        1,
    ),
    "CMYK TIFF": (
        "a.tif",
        lambda p: Image.new("CMYK", (4, 5), (0, 255, 255, 0)).save(p),
        3,
        [255, 0, 0],
        0,
    ),
    "CMYK JPEG": (
        "a.jpg",
        lambda p: Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, quality=95),
        3,
        [255, 0, 0],
        8,
    ),
}


def _palette_image() -> Image.Image:
    image = Image.new("P", (4, 5), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    return image


@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_image_modes_convert_as_documented(case: str, tmp_path: Path) -> None:
    name, write, channels, pixel, tolerance = CONVERSIONS[case]
    path = tmp_path / name
    write(path)
    array = load_image(path, channels)
    assert array.dtype == np.uint8 and array.shape[0] == channels
    got = array[:, 0, 0].astype(int)
    assert np.abs(got - np.array(pixel)).max() <= tolerance, got


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((2, 3), np.uint8)  # 2 rows, 3 columns as stored
    stored[0, 0] = 255  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: shown rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif.tobytes())
    array = load_image(tmp_path / "phone.png", 1)
    assert array.shape == (1, 3, 2)  # upright: 3 rows, 2 columns
    assert array[0, 0, 1] == 255 and array[0].sum() == 255  # the marker is now top-right


def test_float_image_with_nan_is_refused(tmp_path: Path) -> None:
    pixels = np.full((4, 4), 0.5, np.float32)
    pixels[1, 2] = np.nan
    Image.fromarray(pixels, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match=r"f.tif: not a readable image \(NaN or infinite"):
        load_image(tmp_path / "f.tif", 1)


# -- folders -------------------------------------------------------------------------------------
def test_symlink_loops_in_folders_are_listed_once(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    noise().save(tmp_path / "a" / "one.png")
    noise().save(tmp_path / "a" / "b" / "two.png")
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a")  # a/b/up -> a: a cycle
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a" / "self")
    found = finishes(lambda: find_images(tmp_path / "a"))
    assert found == [tmp_path / "a" / "b" / "two.png", tmp_path / "a" / "one.png"]


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_folder(tmp_path_factory.mktemp("hostile-folder") / "data")


def messy_copy(clean: Path, target: Path) -> tuple[Path, dict[str, str]]:
    """The clean user folder plus one bad file of each kind; -> (root, {relative path: reason})."""
    root = Path(shutil.copytree(clean, target))
    bad = {
        "train/line_a/empty.png": "empty file",
        "train/line_b/cut.jpg": "image file is truncated",
        "train/notes.png": "unknown format, or damaged",
        "train/pipe.png": "not a regular file",
        "train/huge.png": "400,000,000 pixels is over the limit",
        "test/good/cut.png": "image file is truncated",
    }
    (root / "train/line_a/empty.png").write_bytes(b"")
    (root / "train/line_b/cut.jpg").write_bytes(encoded(noise(), "JPEG")[:-100])
    (root / "train/notes.png").write_text("not an image")
    os.mkfifo(root / "train/pipe.png")
    (root / "train/huge.png").write_bytes(png_claiming(20_000, 20_000))
    (root / "test/good/cut.png").write_bytes(encoded(noise(), "PNG")[:-100])
    return root, bad


def test_folder_with_bad_files_stops_and_lists_every_one(clean_folder, tmp_path, capsys):
    root, bad = messy_copy(clean_folder, tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--data", "folder", "--data-dir", str(root), *FASTEST, "--out", str(out)]
    assert finishes(lambda: main(argv), 60) == 2  # the FIFO neither blocks listing nor hashing
    error = last_error(capsys)
    first, *listed = error.splitlines()
    assert first == (
        f"ganomaly: error: {root}: 6 unusable images; fix or remove them, "
        "or pass --skip-bad to leave them out:"
    )
    assert len(listed) == len(bad)
    for line, (relative, reason) in zip(listed, sorted(bad.items()), strict=True):
        assert line.startswith(f"  {root / relative}: ") and reason in line
    assert not (out / "model.pt").exists()


def test_skip_bad_leaves_them_out_with_a_count(clean_folder, tmp_path, capsys):
    root, bad = messy_copy(clean_folder, tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--data", "folder", "--data-dir", str(root), "--skip-bad", *FASTEST]
    # In a real process the CLI prints the warning as "ganomaly: warning: ..." on stderr;
    # in-process, pytest records it.
    with pytest.warns(UserWarning, match="--skip-bad: left out 6 unusable images of ") as caught:
        assert main([*argv, "--channels", "1", "--out", str(out)]) == 0
    message = next(str(w.message) for w in caught if "--skip-bad" in str(w.message))
    assert message.startswith(f"--skip-bad: left out 6 unusable images of {root}:")
    assert all(str(root / relative) in message for relative in bad)
    err = capsys.readouterr().err
    assert "32 normal training images, 10 test" in err  # the clean folder's counts exactly
    data = (out / "data.json").read_text()
    assert "cut.png" not in data and "ok0.png" in data


def test_empty_train_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "test" / "good").mkdir(parents=True)
    argv = ["train", "--data", "folder", "--data-dir", str(tmp_path / "data"), *FASTEST]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert last_error(capsys) == (
        f"ganomaly: error: {tmp_path / 'data' / 'train'}: no training images "
        "(png, jpg, jpeg, bmp, tif, tiff, webp)\n"
    )


def test_too_few_training_images_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "data"
    for folder, n in (("train", 2), ("test/good", 1)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            noise().save(root / folder / f"{i}.png")
    argv = ["train", "--data", "folder", "--data-dir", str(root), *FASTEST]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert last_error(capsys) == (
        "ganomaly: error: 2 normal images are too few to hold out 1 for validation\n"
    )


def test_skip_bad_with_no_good_training_image_left(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.png").write_bytes(b"")
    (root / "test" / "good").mkdir(parents=True)
    noise().save(root / "test" / "good" / "ok.png")
    argv = ["train", "--data", "folder", "--data-dir", str(root), "--skip-bad", *FASTEST]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert f"ganomaly: error: {root / 'train'}: no readable training images (1 left out)" in (
        last_error(capsys)
    )


def test_max_pixels_flag_applies_to_folder_data(clean_folder, tmp_path, capsys):
    argv = ["train", "--data", "folder", "--data-dir", str(clean_folder), *FASTEST]
    assert main([*argv, "--max-pixels", "1000", "--out", str(tmp_path / "run")]) == 2
    error = last_error(capsys)
    assert "42 unusable images" in error  # 32 train + 10 test, every one 30x36 = 1080 pixels
    assert (
        f"  {clean_folder / 'test' / 'dent' / 'd0.png'}: 36x30 pixels is over the limit of 1,000\n"
        in (error)
    )
    assert error.count("is over the limit of 1,000") == 42


def test_max_pixels_must_be_positive(capsys):
    assert main(["train", "--data", "digits", "--max-pixels", "0", "--out", "x"]) == 2
    assert last_error(capsys) == "ganomaly: error: --max-pixels must be >= 1\n"


def test_bad_file_in_val_dir_is_listed(clean_folder, tmp_path, capsys):
    val = tmp_path / "val"
    (val / "good").mkdir(parents=True)
    noise().save(val / "good" / "ok.png")
    (val / "good" / "bad.png").write_bytes(b"")
    argv = ["train", "--data", "folder", "--data-dir", str(clean_folder), "--val-dir", str(val)]
    assert main([*argv, *FASTEST, "--out", str(tmp_path / "run")]) == 2
    assert last_error(capsys).splitlines()[1:] == [f"  {val / 'good' / 'bad.png'}: empty file"]


def test_bad_mask_with_skip_bad_leaves_out_its_test_image(tmp_path):
    category = write_mvtec_category(tmp_path)
    (category / "ground_truth" / "crack" / "001_mask.png").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="001_mask.png: not a readable image"):
        load_mvtec(str(tmp_path), "widget")
    with pytest.warns(UserWarning, match="left out 1 unusable image"):
        found = load_mvtec(str(tmp_path), "widget", skip_bad=True)
    assert "test/crack/001.png" not in found.test_ids and len(found.test) == 13
    assert all(
        mask is not None
        for mask, c in zip(found.test_masks, found.test_classes, strict=True)
        if c != "good"
    )


def test_predict_scores_the_good_files_and_names_each_bad_one(digits_run, tmp_path, capsys):
    folder = tmp_path / "inbox"
    folder.mkdir()
    noise().save(folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    os.mkfifo(folder / "pipe.png")
    code = finishes(lambda: main(["predict", str(digits_run), str(folder), "--no-progress"]), 60)
    assert code == 1  # some inputs failed (ganomaly.predict.EXIT_SOME_FAILED)
    captured = capsys.readouterr()
    assert "good.png" in captured.out and "1 images, " in captured.out
    assert captured.err.splitlines() == [
        f"ganomaly: warning: {folder / 'empty.png'}: empty file",
        f"ganomaly: warning: {folder / 'notes.jpg'}: {REFUSED['text named .png'][2]}",
        f"ganomaly: warning: {folder / 'pipe.png'}: {REFUSED['FIFO named .png'][2]}",
        "ganomaly: 3 input(s) could not be scored",
    ]


# -- IDX files -----------------------------------------------------------------------------------
GOOD_IDX = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
IDX_CASES = {
    "bad magic number": ("a", b"\x01\x02" + GOOD_IDX[2:], "not an IDX file (bad magic number)"),
    "empty": ("a", b"", "not an IDX file (bad magic number)"),
    "not unsigned bytes": ("a", GOOD_IDX[:2] + b"\x0d" + GOOD_IDX[3:], "IDX type 0x0d"),
    "truncated header": ("a", GOOD_IDX[:9], "truncated IDX header"),
    "truncated body": ("a", GOOD_IDX[:-5], "truncated IDX file: body has 19 bytes, header says 24"),
    "overlong body": ("a", GOOD_IDX + b"\0", "IDX body has more than the 24 bytes"),
    "header claims 2^96 bytes": (
        "a",
        struct.pack(">BBBBIII", 0, 0, 8, 3, *(0xFFFFFFFF,) * 3) + b"\0" * 64,
        "truncated IDX file: body has 64 bytes",
    ),
    "damaged deflate stream": (
        "a.gz",
        gzip.compress(GOOD_IDX)[:10] + b"\x07" + b"\0" * 20,  # block type 3 does not exist
        "cannot read IDX file (Error -3 while decompressing data: invalid block type)",
    ),
    "gzip checksum wrong": (
        "a.gz",
        gzip.compress(GOOD_IDX)[:-8] + b"\0\0\0\0" + gzip.compress(GOOD_IDX)[-4:],
        "cannot read IDX file (CRC check failed",
    ),
    "not gzip at all": ("a.gz", GOOD_IDX, "cannot read IDX file"),
    "truncated gzip": ("a.gz", gzip.compress(GOOD_IDX)[:-10], "cannot read IDX file"),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_bad_idx_file_is_refused(case: str, tmp_path: Path) -> None:
    name, data, reason = IDX_CASES[case]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError) as caught:
        read_idx(tmp_path / name)
    assert str(caught.value).startswith(f"{tmp_path / name}: ") and reason in str(caught.value)


def test_idx_label_and_image_count_mismatch(tmp_path, monkeypatch, capsys, isolated_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    monkeypatch.delenv("GANOMALY_DATA", raising=False)
    write_idx_dataset(tmp_path / "fmnist", n_train=30, n_test=20)
    labels = tmp_path / "fmnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.arange(29) % 10)))
    argv = ["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "fmnist")]
    assert main([*argv, "--normal-class", "1", *FASTEST, "--out", str(tmp_path / "run")]) == 2
    image_file = tmp_path / "fmnist" / "train-images-idx3-ubyte.gz"
    assert last_error(capsys) == f"ganomaly: error: {image_file}: 30 images but 29 labels\n"


# -- model files and checkpoints ----------------------------------------------------------------
class RunsCode:
    """Pickles as a call of os.system: loading it without weights_only would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def model_dict(run: Path) -> dict:
    return torch.load(run / "model.pt", weights_only=True)


def _edited(change: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def write(run: Path, path: Path) -> None:
        obj = model_dict(run)
        change(obj)
        torch.save(obj, path)

    return write


def _wrong_shape(obj: dict) -> None:
    key = next(k for k, v in obj["generator"].items() if v.ndim == 4)
    obj["generator"][key] = torch.zeros(3, 3, 3, 3)


def _first_float(obj: dict) -> torch.Tensor:
    return next(v for v in obj["generator"].values() if v.is_floating_point())


def _drop_weight(obj: dict) -> None:
    obj["generator"].pop(sorted(obj["generator"])[0])


MODEL_CASES = {
    "text file": (lambda run, p: p.write_text("hello"), "not a readable model file"),
    "zero-byte file": (lambda run, p: p.write_bytes(b""), "not a readable model file"),
    "truncated model": (
        lambda run, p: p.write_bytes((run / "model.pt").read_bytes()[:3000]),
        "not a readable model file",
    ),
    "not ours": (lambda run, p: torch.save({"weights": torch.ones(3)}, p), "not a ganomaly model"),
    "a list, not a dict": (lambda run, p: torch.save([1, 2], p), "not a ganomaly model file"),
    "newer format version": (
        _edited(lambda o: o.update(format_version=3)),
        "model file format version 3 is newer than this ganomaly understands (2); upgrade",
    ),
    "missing key": (
        _edited(lambda o: o.pop("threshold")),
        "damaged model file (field 'threshold' missing or invalid)",
    ),
    "wrong value type": (
        _edited(lambda o: o.update(channels="3")),
        "damaged model file (field 'channels' missing or invalid)",
    ),
    "NaN threshold": (
        _edited(lambda o: o.update(threshold=float("nan"))),
        "damaged model file (threshold is nan)",
    ),
    "non-finite weights": (
        _edited(lambda o: _first_float(o).fill_(float("inf"))),
        "damaged model file (non-finite generator weights)",
    ),
    "weights not tensors": (
        _edited(lambda o: o["generator"].update(extra=[1.0])),
        "generator weights are not tensors",
    ),
    "wrong tensor shape": (_edited(_wrong_shape), "has shape [3, 3, 3, 3], the settings need"),
    "missing weight": (_edited(_drop_weight), "weights do not match the model (missing "),
    "settings asking for a huge network": (
        _edited(lambda o: o["config"].update(ngf=10**7)),
        "weights do not match the model",
    ),
    "unknown setting": (
        _edited(lambda o: o["config"].update(colour="red")),
        "damaged model file (unknown setting(s) colour",
    ),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_file_is_one_line_exit_2(case, digits_run, tmp_path, capsys):
    write, reason = MODEL_CASES[case]
    model = tmp_path / "model.pt"
    write(digits_run, model)
    noise().save(tmp_path / "img.png")
    started = time.perf_counter()
    assert main(["predict", str(model), str(tmp_path / "img.png"), "--no-progress"]) == 2
    assert time.perf_counter() - started < 20  # the huge network is never allocated
    error = last_error(capsys)
    assert error.startswith(f"ganomaly: error: {model}: ") and reason in error
    assert error.count("\n") == 1


def test_fifo_as_model_file_does_not_block(tmp_path, capsys):
    os.mkfifo(tmp_path / "model.pt")
    code = finishes(lambda: main(["predict", str(tmp_path / "model.pt"), "x.png"]))
    assert code == 2
    assert f"{tmp_path / 'model.pt'}: not a regular file" in last_error(capsys)


def test_pickle_that_runs_code_is_refused_and_runs_nothing(digits_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pt"
    torch.save({"format": "ganomaly-model", "payload": RunsCode(marker)}, model)
    noise().save(tmp_path / "img.png")
    assert main(["predict", str(model), str(tmp_path / "img.png")]) == 2
    error = last_error(capsys)
    assert error.startswith(f"ganomaly: error: {model}: refused to load: not a plain model file")
    assert "posix.system" in error and "nothing in it was run" in error
    # `ganomaly evaluate` on a run directory whose model.pt is the same file
    run = Path(shutil.copytree(digits_run, tmp_path / "run"))
    shutil.copy(model, run / "model.pt")
    assert main(["evaluate", str(run)]) == 2
    assert "refused to load" in last_error(capsys)
    assert not marker.exists()
    # The file is really hostile: an unsafe load runs the command (so the checks above matter).
    torch.load(model, weights_only=False)
    assert marker.exists()


def test_checkpoints_that_run_code_or_are_newer_are_skipped(digits_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = Path(shutil.copytree(digits_run, tmp_path / "run"))
    checkpoints = sorted((run / "checkpoints").glob("epoch-*.pt"))
    assert checkpoints
    newer = torch.load(checkpoints[-1], weights_only=True)
    newer["format_version"] = 99
    torch.save(newer, checkpoints[-1])
    for path in checkpoints[:-1]:
        torch.save({"format": "ganomaly-checkpoint", "payload": RunsCode(marker)}, path)
    with pytest.warns(UserWarning) as warned:
        assert main(["train", "--resume", str(run)]) == 2
    skipped = [str(w.message) for w in warned if "skipping damaged checkpoint" in str(w.message)]
    assert len(skipped) == len(checkpoints)
    assert "checkpoint format version 99 is newer than this ganomaly understands (1)" in skipped[0]
    assert all("refused to load: not a plain checkpoint" in m for m in skipped[1:])
    assert last_error(capsys) == (
        f"ganomaly: error: {run}: every checkpoint is damaged; cannot resume\n"
    )
    assert not marker.exists()


# -- property-based: random bytes and arrays ---------------------------------------------------
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\x00", b"MM\x00*", b"GIF89a"]


@FUZZ
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_random_bytes_never_escape_the_image_reader(tmp_path_factory, prefix, body):
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "x.png"
    path.write_bytes(prefix + body)
    try:
        array = load_image(path, 3)
    except ImageError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    else:
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] == 3


@FUZZ
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_random_uploads_never_escape_the_server_decoder(prefix, body):
    from ganomaly.server import UploadError, decode_upload

    try:
        array = decode_upload(prefix + body, "up.png", 1, 1_000_000)
    except UploadError as error:
        assert error.status in (400, 413, 415) and error.detail.startswith("up.png: ")
    else:
        assert array.dtype == np.uint8 and array.shape[0] == 1


@FUZZ
@given(
    header=st.sampled_from([b"", b"\0\0\x08\x01", b"\0\0\x08\x03", GOOD_IDX[:16]]),
    body=st.binary(max_size=512),
    form=st.sampled_from(["raw", "gzip", "raw named .gz", "damaged gzip"]),
    damage=st.tuples(st.integers(0, 80), st.binary(min_size=1, max_size=8)),
)
def test_random_bytes_never_escape_the_idx_reader(tmp_path_factory, header, body, form, damage):
    data = header + body
    path = tmp_path_factory.mktemp("idx", numbered=True) / ("x" if form == "raw" else "x.gz")
    if form == "gzip":
        data = gzip.compress(data)
    elif form == "damaged gzip":  # a valid gzip header, then bytes overwritten somewhere
        at, junk = damage
        compressed = gzip.compress(data)
        at = 10 + at % max(1, len(compressed) - 10)
        data = compressed[:at] + junk + compressed[at + len(junk) :]
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except DataError as error:
        assert str(error).startswith(f"{path}: ")
    else:
        assert array.dtype == np.uint8


@pytest.fixture(scope="module")
def fitted(digits_run: Path) -> GANomalyDetector:
    return GANomalyDetector.load(digits_run)


DTYPES = [np.uint8, np.int8, np.int16, np.int64, np.uint16, np.float16, np.float32, np.float64]
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=4, max_dims=4, min_side=0, max_side=20),
    hnp.array_shapes(min_dims=1, max_dims=5, min_side=1, max_side=6),
)


@st.composite
def image_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from([*DTYPES, np.bool_])))
    shape = draw(SHAPES)
    elements = None  # anything the dtype holds
    if dtype.kind == "f":  # in [0, 1]; in [0, 1] with NaN or infinities; or anything
        unit = st.floats(0, 1, width=8 * dtype.itemsize)
        special = st.sampled_from([np.nan, np.inf, -np.inf])
        elements = draw(st.sampled_from([unit, st.one_of(unit, special), None]))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@FUZZ
@given(images=image_arrays())
@example(images=np.zeros((0, 1, 0, 0), np.uint8))  # no images, and no pixels either
def test_random_arrays_score_or_raise_a_clear_value_error(fitted, images):
    try:
        scores = fitted.decision_function(images)
    except ValueError as error:  # ImageError is one too
        assert str(error) and "\n" not in str(error)
    else:
        assert scores.shape == (images.shape[0],) and np.isfinite(scores).all()


def test_nan_and_out_of_range_arrays_say_why(fitted):
    images = np.full((2, 1, 8, 8), 0.5, np.float32)
    images[1, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="images hold NaN or infinite values"):
        fitted.decision_function(images)
    with pytest.raises(ValueError, match=r"int64 images must be in 0\.\.255; pass floats"):
        fitted.decision_function(np.full((1, 1, 8, 8), 256, np.int64))
    with pytest.raises(
        ValueError, match=r"images with no pixels or channels: shape \(2, 1, 0, 8\)"
    ):
        fitted.decision_function(np.zeros((2, 1, 0, 8), np.uint8))
    with pytest.raises(ValueError, match="cannot convert 2-channel images to 1 channels"):
        fitted.decision_function(np.zeros((1, 2, 8, 8), np.uint8))


def test_fit_on_a_fifo_is_refused_before_it_is_opened(tmp_path):
    # Guessing the channel count reads the first file's header: a FIFO there must be refused
    # from `stat`, or opening it would block for ever (the alarm turns a hang into a failure).
    fifo = tmp_path / "first.png"
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opening the FIFO hung"))
    signal.alarm(20)
    try:
        with pytest.raises(ImageError, match="not a regular file"):
            GANomalyDetector(image_size="16", epochs=1).fit([fifo])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
