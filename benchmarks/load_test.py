"""`ganomaly serve` under load and abuse: throughput, latency, fuzzed uploads, memory.

Starts the real server (`python -m ganomaly serve`) as a subprocess on 127.0.0.1 only, then
    (a) load: N concurrent clients post valid PNGs (the model's size and others) until a request
        count or a time bound is reached, whichever comes first; throughput, p50/p99 latency
        and the answers by status;
    (b) fuzz: seeded abusive requests (random bytes, truncated PNG/JPEG, pixel-bomb headers,
        bodies over the upload limit, wrong content types, empty files, a missing field, too
        many files, odd image modes, lying Content-Length, over-long chunked bodies, stalled
        bodies); none may get a 5xx, every one must get its expected status, every error a
        JSON `{"detail": "..."}`, and /healthz must still answer afterwards;
    (c) the server's resident memory (VmRSS) after a warm-up and at the end: growth < 50 MB.
Exits 1 on any 5xx, a dead server, a fuzz answer other than expected, a transport error, or
memory growth of 50 MB or more.

    python benchmarks/load_test.py                  # trains a tiny digits model in a temp dir
    python benchmarks/load_test.py runs/demo --json # one JSON object instead of the summary
    python benchmarks/load_test.py --seconds 10 --requests 500 --clients 4 --fuzz 200

The fuzz cases are also used by tests/test_server_abuse.py (import this file by path).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

HOST = "127.0.0.1"  # loopback only: this script never binds or connects anywhere else
MEMORY_GROWTH_LIMIT_MB = 50.0
# Small limits make the over-limit cases cheap to send; the defaults (20 MiB) behave the same.
SERVER_LIMITS = {"max_upload_mb": 1.0, "max_pixels": 4_000_000, "max_files": 8}
TRAIN = ["--data", "digits", "--normal-class", "0", "--ngf", "8", "--nz", "16"]
TRAIN += ["--image-size", "32", "--epochs", "1", "--no-progress"]


# ---------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_args(
    max_upload_mb: float, max_pixels: int, max_files: int, body_timeout: float = 30.0
) -> list[str]:
    return [
        "--max-upload-mb", str(max_upload_mb), "--max-pixels", str(max_pixels),
        "--max-files", str(max_files), "--body-timeout", str(body_timeout),
    ]  # fmt: skip


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path  # the server's stdout and stderr (a file: a full pipe would stall the server)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(
    model: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 90.0
) -> Iterator[Server]:
    """`python -m ganomaly serve MODEL` on a free loopback port, yielded once /healthz answers;
    always stopped afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "ganomaly", "serve", str(model), "--host", HOST]
    with tempfile.TemporaryDirectory(prefix="ganomaly-serve-") as folder:
        log = Path(folder) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [*command, "--port", str(port), "--log-level", "warning", *extra],
                env={**os.environ, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = Server(f"http://{HOST}:{port}", process, log)
        try:
            deadline = time.monotonic() + timeout
            while not healthy(server.url):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {process.returncode}: {server.output()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not answer /healthz within {timeout:g} s")
                time.sleep(0.2)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).json() == {"status": "ok"}
    except (httpx.HTTPError, ValueError):
        return False


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc/PID/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def train_tiny(out: Path) -> Path:
    command = [sys.executable, "-m", "ganomaly", "train", *TRAIN, "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
    return out


# ---------------------------------------------------------------------------- images


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save: Any) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def noise(rng: np.random.Generator, height: int, width: int, channels: int = 1) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def load_images(image_hw: tuple[int, int], channels: int, seed: int = 0) -> list[bytes]:
    """Valid PNGs for the load phase: the model's size and channels, and other sizes/modes."""
    rng = np.random.default_rng(seed)
    h, w = image_hw
    sizes = [(h, w, channels), (8, 8, 1), (40, 40, 3), (48, 64, 1), (128, 128, 3), (h, w, 3)]
    return [encode(noise(rng, *size)) for size in sizes]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height grey pixels, with a few bytes of data: the
    server must refuse it from the header, never allocate it."""
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    idat = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + (png_chunk(b"IEND", b""))
    )


def truncated(data: bytes, rng: random.Random, start: int) -> bytes:
    """`data` cut somewhere after byte `start` and before its last quarter."""
    return data[: rng.randrange(start, max(start + 1, len(data) * 3 // 4))]


# ---------------------------------------------------------------------------- fuzz cases


def chunked_upload(size: int, boundary: str = "chunkb0undary") -> bytes:
    """A raw POST /v1/score with no Content-Length: a multipart file part of `size` bytes sent
    in 64 KiB chunks, never finished (the server must refuse it before the end)."""
    head = (
        f"POST /v1/score HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    )
    start = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n\r\n'
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return f"{head}{len(start):x}\r\n{start}\r\n".encode() + chunk * -(-size // len(piece))


@dataclass
class Case:
    """One request and the statuses it may get. `files`, `data`, `content` as httpx takes them;
    `raw` = bytes written straight to the socket (for what httpx will not send); `hang_up`: close
    the connection right after writing `raw` (status 0, nobody left to answer)."""

    kind: str
    expect: tuple[int, ...]
    method: str = "POST"
    path: str = "/v1/score"
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    hang_up: bool = False


def fuzz_cases(
    n: int,
    seed: int,
    image_hw: tuple[int, int],
    max_upload_bytes: int,
    max_pixels: int,
    max_files: int,
) -> list[Case]:
    """`n` seeded abusive requests, cycling through every kind so each appears n/len(kinds)
    times; a valid image in odd formats and modes is among them (it must still score)."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    h, w = image_hw
    boundary = "fuzzb0undary"

    def part(data: bytes, name: str = "x.png", ctype: str = "image/png") -> list[Any]:
        return [("file", (name, data, ctype))]

    def valid_png() -> bytes:
        return encode(noise(nprng, rng.randint(h // 2, 2 * h), rng.randint(w // 2, 2 * w)))

    def random_bytes() -> Case:
        blob = rng.randbytes(rng.randint(1, 8192))
        ctype = rng.choice(["image/png", "image/jpeg", "application/octet-stream", "text/plain"])
        return Case("random-bytes", (415,), files=part(blob, "r.png", ctype))

    # Cut inside the header: not an image (415); after it: a PNG/JPEG that won't decode (422).
    def truncated_png() -> Case:
        data = encode(noise(nprng, 64, 64, rng.choice([1, 3])))
        return Case("truncated-png", (415, 422), files=part(truncated(data, rng, 8)))

    def truncated_jpeg() -> Case:
        data = encode(noise(nprng, 64, 64, 3), "JPEG", quality=90)
        return Case("truncated-jpeg", (415, 422), files=part(truncated(data, rng, 2), "t.jpg"))

    def pixel_bomb() -> Case:
        side = rng.choice([int(max_pixels**0.5) + 1, 30_000, 100_000, 2**31 - 1])
        data = png_bomb(side, rng.choice([side, int(max_pixels**0.5) + 1]))
        return Case("pixel-bomb", (413,), files=part(data, "bomb.png"))

    def over_limit() -> Case:
        blob = rng.randbytes(max_upload_bytes + rng.randint(1, max(1, max_upload_bytes // 8)))
        return Case("over-upload-limit", (413,), files=part(blob, "big.png"))

    def wrong_request_type() -> Case:
        ctype = rng.choice(
            ["application/json", "text/plain", "image/png", "application/x-www-form-urlencoded",
             "multipart/form-data", "multipart/mixed; boundary=zz"]
        )  # fmt: skip
        return Case(
            "wrong-content-type", (400,), content=valid_png(), headers={"content-type": ctype}
        )

    def wrong_part_type() -> Case:  # the server reads the bytes, not the declared type
        ctype = rng.choice(["text/plain", "application/x-evil", "image/gif", ""])
        return Case("wrong-part-type", (200,), files=part(valid_png(), "p.png", ctype))

    def empty() -> Case:
        return Case("empty-file", (400,), files=part(b"", "empty.png"))

    def missing_field() -> Case:
        which = rng.randrange(4)
        if which == 3:  # no filename: a text field to the server, whatever its bytes
            return Case("missing-field", (400,), files=part(valid_png(), ""))
        if which == 0:
            return Case(
                "missing-field", (400,), files=[("image", ("x.png", valid_png(), "image/png"))]
            )
        if which == 1:
            return Case("missing-field", (400,), data={"file": "not a file"})
        return Case("missing-field", (400,))  # no body at all

    def many_files() -> Case:
        count = max_files + rng.randint(1, 3 * max_files)
        tiny = encode(noise(nprng, 4, 4))
        return Case("too-many-files", (400,), files=part(tiny) * count)

    def garbage_multipart() -> Case:
        body = rng.choice([
            rng.randbytes(rng.randint(0, 2048)),  # no boundary anywhere
            f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{boundary}--\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a',
        ])  # fmt: skip
        body = body.encode() if isinstance(body, str) else body
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        return Case("malformed-multipart", (400,), content=body, headers=headers)

    def odd_image() -> Case:
        size = (rng.choice([1, 2, 7, h, 3 * h]), rng.choice([1, 3, w, 5 * w]))
        fmt, mode = rng.choice([
            ("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"), ("PNG", "LA"),
            ("PNG", "1"), ("JPEG", "CMYK"), ("JPEG", "L"), ("BMP", "RGB"), ("GIF", "P"),
            ("TIFF", "RGB"), ("TIFF", "F"), ("WEBP", "RGBA"),
        ])  # fmt: skip
        data = encode(noise(nprng, *size, 3), fmt, mode)
        name = rng.choice(["../../etc/passwd", "名前.png", "a" * 300, "x.png", "q\"uo'te.png"])
        query = rng.choice(["", "?anomaly_map=true", "?reconstruction=true&anomaly_map=1"])
        return Case("odd-valid-image", (200,), path="/v1/score" + query, files=part(data, name))

    def unserved_format() -> Case:  # Pillow reads these; an open server must not parse them
        fmt = rng.choice(["ICO", "TGA", "PCX", "PPM", "SGI", "XBM"])
        mode = "1" if fmt == "XBM" else "RGB"
        data = encode(noise(nprng, 16, 16, 3), fmt, mode)
        return Case("unserved-format", (415,), files=part(data, "x." + fmt.lower()))

    def bad_query() -> Case:
        query = rng.choice(["anomaly_map=maybe", "reconstruction=2", "anomaly_map=%00"])
        return Case("bad-query", (422,), path="/v1/score?" + query, files=part(valid_png()))

    def wrong_route() -> Case:
        method, path, status = rng.choice([
            ("GET", "/v1/score", 405), ("PUT", "/v1/score", 405), ("DELETE", "/v1/model", 405),
            ("POST", "/v1/nothing", 404), ("POST", "/healthz", 405), ("GET", "/../../etc", 404),
        ])  # fmt: skip
        return Case("wrong-route", (status,), method=method, path=path)

    def lying_length() -> Case:  # claims far more than the limit, sends a few bytes
        claimed = rng.choice([max_upload_bytes + 1, 10**12, 2**63])
        head = (
            f"POST /v1/score HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {claimed}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        )
        return Case("lying-content-length", (413,), raw=head.encode() + rng.randbytes(64))

    def bad_length() -> Case:  # refused by the HTTP parser (h11) with a plain-text 400
        value = rng.choice(["-5", "abc", "1e9", "12, 13"])
        head = f"POST /v1/score HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {value}\r\n\r\n"
        return Case("invalid-content-length", (400,), raw=head.encode())

    def chunked_over_limit() -> Case:  # no Content-Length: the streamed body is capped
        return Case("chunked-over-limit", (413,), raw=chunked_upload(max_upload_bytes + 131072))

    def stalled_body() -> Case:  # a Content-Length under the limit, then silence: 408, not a hang
        head = (
            f"POST /v1/score HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5000\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        )
        return Case("stalled-body", (408,), raw=head.encode() + b"--" + boundary.encode())

    def hang_up() -> Case:  # the client leaves mid-body: the server must shrug, not log a fault
        body = valid_png()
        head = (
            f"POST /v1/score HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body) + 200}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="h.png"\r\n\r\n'
        )
        cut = rng.randrange(len(body))
        return Case("client-hangs-up", (0,), raw=head.encode() + body[:cut], hang_up=True)

    makers = [
        random_bytes, truncated_png, truncated_jpeg, pixel_bomb, over_limit, wrong_request_type,
        wrong_part_type, empty, missing_field, many_files, garbage_multipart, odd_image,
        unserved_format, bad_query, wrong_route, lying_length, bad_length, chunked_over_limit,
        stalled_body, hang_up,
    ]  # fmt: skip
    return [makers[i % len(makers)]() for i in range(n)]


# ---------------------------------------------------------------------------- sending


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (transport error)
    body: bytes
    content_type: str
    seconds: float
    error: str = ""
    sent: int = 0  # bytes written, for raw requests

    def detail(self) -> str | None:
        """The `detail` string of a JSON error body, else None."""
        try:
            value = json.loads(self.body).get("detail")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) and value else None


def raw_request(url: str, payload: bytes, timeout: float = 30.0, hang_up: bool = False) -> Answer:
    """Write `payload` to a fresh connection in 64 KiB slices, stopping as soon as the server
    answers or closes (a server that refuses a body early closes the connection), then read the
    answer until the server closes or `timeout` (or, with `hang_up`, close at once). Returns what
    came back, however malformed."""
    host, port = url.rsplit("//", 1)[1].split(":")
    if host != HOST:
        raise ValueError(f"{url}: raw requests go to {HOST} only")
    start = time.monotonic()
    sent, received, error = 0, b"", ""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            while sent < len(payload):
                if select.select([sock], [], [], 0)[0]:
                    break  # an early answer: stop sending
                sent += sock.send(payload[sent : sent + 65536])
        except OSError as exc:  # the server closed the connection on us: read what it said
            error = type(exc).__name__
        if hang_up:
            return Answer(0, b"", "", time.monotonic() - start, "hung up", sent)
        deadline = start + timeout
        try:
            while time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if complete_response(received):
                    break
        except OSError as exc:
            error = error or type(exc).__name__
    seconds = time.monotonic() - start
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Answer(0, received, "", seconds, error or "no HTTP answer", sent)
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(status, body, headers.get("content-type", ""), seconds, error, sent)


def complete_response(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return len(body) >= int(value)
    return False


def send(client: httpx.Client, case: Case) -> Answer:
    """One fuzz case; transport errors become an Answer with status 0."""
    start = time.monotonic()
    if case.raw is not None:
        return raw_request(str(client.base_url).rstrip("/"), case.raw, hang_up=case.hang_up)
    try:
        response = client.request(
            case.method, case.path, files=case.files, data=case.data, content=case.content,
            headers=case.headers,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        return Answer(0, b"", "", time.monotonic() - start, type(exc).__name__)
    content_type = response.headers.get("content-type", "")
    return Answer(response.status_code, response.content, content_type, time.monotonic() - start)


def check(case: Case, answer: Answer) -> str | None:
    """Why `answer` is wrong for `case`, or None. Every error the application answers is JSON
    with a one-line `detail`; the HTTP parser's own 400 for a malformed request is plain text."""
    if answer.status not in case.expect:
        return f"{case.kind}: got {answer.status or answer.error}, expected {case.expect}"
    json_error = answer.content_type.startswith("application/json") and answer.detail()
    if answer.status >= 400 and case.kind != "invalid-content-length" and not json_error:
        return f"{case.kind}: {answer.status} without a JSON detail: {answer.body[:200]!r}"
    return None


# ---------------------------------------------------------------------------- phases


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(np.ceil(q / 100 * len(ordered))) - 1))]


def run_load(
    url: str,
    images: list[bytes],
    clients: int,
    max_requests: int,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`clients` threads post single valid images round-robin until `max_requests` have been
    sent or `seconds` have passed; returns throughput, latency percentiles and status counts."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal issued
        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= max_requests:
                        return
                    index = issued
                    issued += 1
                files = [("file", (f"load{index}.png", images[index % len(images)], "image/png"))]
                start = time.monotonic()
                try:
                    status = str(client.post("/v1/score", files=files).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    latencies.append(time.monotonic() - start)
                    statuses[status] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    done = len(latencies)
    return {
        "clients": clients,
        "requests": done,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(done / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(1000 * percentile(latencies, 50), 1) if done else None,
        "p99_ms": round(1000 * percentile(latencies, 99), 1) if done else None,
        "max_ms": round(1000 * max(latencies), 1) if done else None,
        "by_status": dict(sorted(statuses.items())),
    }


def run_fuzz(url: str, cases: list[Case], workers: int = 4) -> dict[str, Any]:
    """Every case once, `workers` at a time; counts by kind and status, 5xx and wrong answers."""
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(lambda case: send(client, case), cases))
    by_kind: dict[str, Counter[int]] = {}
    problems = []
    for case, answer in zip(cases, answers, strict=True):
        by_kind.setdefault(case.kind, Counter())[answer.status] += 1
        problem = check(case, answer)
        if problem:
            problems.append(problem)
    statuses = Counter(a.status for a in answers)
    return {
        "requests": len(cases),
        "server_errors_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "no_answer": sum(
            1 for c, a in zip(cases, answers, strict=True) if a.status == 0 and 0 not in c.expect
        ),
        "wrong_answers": len(problems),
        "problems": problems[:20],
        "by_status": {str(s): n for s, n in sorted(statuses.items())},
        "by_kind": {k: {str(s): n for s, n in sorted(c.items())} for k, c in by_kind.items()},
        "slowest_ms": round(1000 * max(a.seconds for a in answers), 1) if answers else None,
    }


# ---------------------------------------------------------------------------- main


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    limits = SERVER_LIMITS
    extra = server_args(**limits, body_timeout=args.body_timeout)
    with serve(model, *extra) as server:
        card = httpx.get(server.url + "/v1/model", timeout=30).json()
        image_hw = (int(card["image_size"][0]), int(card["image_size"][1]))
        images = load_images(image_hw, int(card["channels"]), args.seed)
        # warm-up: torch's first calls, the thread pool and the allocator's arenas
        warm = run_load(server.url, images, args.clients, 20 * args.clients, 60.0)
        rss_start = rss_mb(server.process.pid)
        load = run_load(server.url, images, args.clients, args.requests, args.seconds)
        rss_after_load = rss_mb(server.process.pid)
        cases = fuzz_cases(
            args.fuzz, args.seed, image_hw, card["limits"]["max_upload_bytes"],
            card["limits"]["max_pixels"], card["limits"]["max_files"],
        )  # fmt: skip
        fuzz = run_fuzz(server.url, cases)
        alive = server.process.poll() is None and healthy(server.url)
        rss_end = rss_mb(server.process.pid) if server.process.poll() is None else float("nan")
        log = server.output()
    tracebacks = log.count("Traceback")
    memory = {
        "rss_after_warmup_mb": round(rss_start, 1),
        "rss_after_load_mb": round(rss_after_load, 1),
        "rss_end_mb": round(rss_end, 1),
        "growth_mb": round(rss_end - rss_start, 1),
        "limit_mb": MEMORY_GROWTH_LIMIT_MB,
    }
    load_errors = sum(n for s, n in load["by_status"].items() if s != "200")
    failures = []
    if fuzz["server_errors_5xx"] or any(s.startswith("5") for s in load["by_status"]):
        failures.append("5xx answers")
    if not alive:
        failures.append("server dead or /healthz failing after the fuzz phase")
    if not memory["growth_mb"] < MEMORY_GROWTH_LIMIT_MB:  # also catches NaN (a dead server)
        failures.append(f"memory grew by {memory['growth_mb']} MB")
    if fuzz["wrong_answers"] or fuzz["no_answer"]:
        failures.append(f"{fuzz['wrong_answers']} fuzz answers not as expected")
    if load_errors:
        failures.append(f"{load_errors} load requests not answered 200")
    if tracebacks:
        failures.append(f"{tracebacks} tracebacks in the server log")
    return {
        "model": str(model),
        "image_size": list(image_hw),
        "server_limits": {**limits, "body_timeout_s": args.body_timeout},
        "warmup_requests": warm["requests"],
        "load": load,
        "fuzz": fuzz,
        "server_alive": alive,
        "server_log_tracebacks": tracebacks,
        "memory": memory,
        "failures": failures,
        "ok": not failures,
    }


def summary(result: dict[str, Any]) -> str:
    load, fuzz, memory = result["load"], result["fuzz"], result["memory"]
    lines = [
        f"model {result['model']} ({result['image_size'][0]}x{result['image_size'][1]}), "
        f"server limits {result['server_limits']}",
        f"load: {load['requests']} requests from {load['clients']} clients in "
        f"{load['seconds']} s = {load['requests_per_second']} req/s; latency p50 "
        f"{load['p50_ms']} ms, p99 {load['p99_ms']} ms, max {load['max_ms']} ms",
        f"      answers by status: {load['by_status']}",
        f"fuzz: {fuzz['requests']} requests; 5xx: {fuzz['server_errors_5xx']}, no answer: "
        f"{fuzz['no_answer']}, not as expected: {fuzz['wrong_answers']}; by status "
        f"{fuzz['by_status']}; slowest {fuzz['slowest_ms']} ms",
    ]
    width = max(len(kind) for kind in fuzz["by_kind"])
    lines += [f"      {kind:<{width}}  {counts}" for kind, counts in fuzz["by_kind"].items()]
    lines += [f"      ! {problem}" for problem in fuzz["problems"]]
    lines += [
        f"server alive after fuzz: {result['server_alive']}; tracebacks in its log: "
        f"{result['server_log_tracebacks']}",
        f"memory (VmRSS): {memory['rss_after_warmup_mb']} MB after warm-up, "
        f"{memory['rss_after_load_mb']} MB after load, {memory['rss_end_mb']} MB at the end: "
        f"growth {memory['growth_mb']} MB (limit < {memory['limit_mb']:g} MB)",
        "PASS" if result["ok"] else "FAIL: " + "; ".join(result["failures"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="run dir or model.pt (default: "
                        "train a tiny digits model in a temp dir)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=60.0, help="load phase time bound")
    parser.add_argument("--requests", type=int, default=2000, help="load phase request bound")
    parser.add_argument("--clients", type=int, default=8, help="concurrent load clients")
    parser.add_argument("--fuzz", type=int, default=600, help="number of fuzzed requests")
    parser.add_argument("--body-timeout", type=float, default=2.0, help="server --body-timeout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ganomaly-load-") as folder:
        model = args.run_dir
        if model is None:
            print("training a tiny digits model ...", file=sys.stderr, flush=True)
            model = train_tiny(Path(folder) / "digits0")
        result = measure(args, model)
    print(json.dumps(result) if args.json else summary(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
