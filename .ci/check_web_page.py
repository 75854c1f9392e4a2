"""Start `ganomaly serve` from an installed package and check that the web page is served.

    python .ci/check_web_page.py GANOMALY_COMMAND RUN_DIR STATIC_SOURCE_DIR

Starts `GANOMALY_COMMAND serve RUN_DIR` on a free loopback port, waits for /healthz, then
checks that GET / returns the page and that every /static/ file the page links (style sheet,
script) is served with exactly the bytes of STATIC_SOURCE_DIR: a wheel without its package
data fails here. The server is always stopped. Exit 0 when all hold, else 1. Standard library
only (the installed extras need not include an HTTP client).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main(command: str, run_dir: str, static_source: str) -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [command, "serve", run_dir, "--port", str(port), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    print(f"check_web_page: server exited with {server.returncode}")
                    print(log.read().decode(errors="replace"))
                    return 1
                try:
                    if get(base + "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    print(f"check_web_page: no answer on /healthz in {STARTUP_SECONDS:g} s")
                    return 1
                time.sleep(0.3)
            return check_page(base, Path(static_source))
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def check_page(base: str, static_source: Path) -> int:
    status, body = get(base + "/")
    page = body.decode(errors="replace")
    if status != 200 or "<title>ganomaly" not in page:
        print(f"check_web_page: GET / answered {status} without the ganomaly page")
        return 1
    linked = sorted(set(re.findall(r'(?:href|src)="/static/([^"]+)"', page)))
    if not linked:
        print("check_web_page: the page links no /static/ file")
        return 1
    problems = 0
    for name in linked:
        status, served = get(f"{base}/static/{name}")
        expected = (static_source / name).read_bytes()
        if status != 200 or served != expected:
            print(f"check_web_page: /static/{name}: status {status}, {len(served)} bytes "
                  f"(the source file has {len(expected)})")  # fmt: skip
            problems += 1
    if not problems:
        print(f"check_web_page: GET / and /static/{{{','.join(linked)}}} served from the wheel")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
