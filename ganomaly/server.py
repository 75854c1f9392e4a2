"""`ganomaly serve`: an HTTP scoring service with a web page, over one loaded model.

    ganomaly serve runs/demo --host 127.0.0.1 --port 8000 [--api-key-env GANOMALY_API_KEY]

Routes (OpenAPI schema at /openapi.json):
    POST /v1/score      multipart, one or more `file` fields
                        -> {"threshold", "n_errors", "results": [{"filename", "score", ...}]}
                        a file that cannot be scored gets an `error` in its result and the
                        others are still scored (200); when none can be, the answer is the
                        files' error status (415, 413, 422, 400), 422 when they differ;
                        ?anomaly_map=true adds each image's heat map as a PNG data URL,
                        ?reconstruction=true the model's input and reconstruction as PNGs
    GET  /v1/model      the model card: data, image size, threshold, training metrics, limits
    GET  /healthz       liveness
    GET  /              the web page (ganomaly/static)

Every upload goes through the one preprocessing (`ganomaly.images`) and the detector's own
scorer, so the server's scores equal the CLI's and the API's. Safety, in order: the request
size is checked against Content-Length before anything is read and the body is streamed with a
hard cap and an idle timeout; only common raster formats are opened, and each file's pixel count
is read from its header before decoding; errors are JSON 4xx with a one-line `detail`, never a
5xx; a client hanging up mid-body is no error; the model is loaded once and the torch call runs
in a worker thread under one lock. With --api-key-env the /v1 routes need the key, as
`X-API-Key: KEY` or `Authorization: Bearer KEY`.
"""

import argparse
import asyncio
import base64
import functools
import hmac
import io
import json
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly.config import INFERENCE_DEVICE, ConfigError

DEFAULT_MAX_UPLOAD_MB = 20.0
# Half the library's DEFAULT_MAX_PIXELS (ganomaly.config): the server decodes uploads from
# anyone, several at a time, so one request must not hold gigabytes of pixels.
SERVER_MAX_PIXELS = 25_000_000
DEFAULT_MAX_FILES = 32
DEFAULT_BODY_TIMEOUT_S = 30.0
# Pillow can open some 40 formats, some through external programs (EPS runs Ghostscript) or
# rarely exercised parsers; an upload from anyone gets only the common raster formats.
UPLOAD_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
STATIC_DIR = Path(__file__).parent / "static"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class UploadError(Exception):
    """A client error with its HTTP status; `detail` is one line naming the file."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _closing(status: int) -> dict[str, str]:
    """Headers for an error answered before the body was read to its end: after 408 or 413 the
    connection is closed, so the server never reads (nor waits for) the rest of that body."""
    return {"connection": "close"} if status in (408, 413) else {}


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in _closing(status).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class UploadLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` before reading them.

    A declared Content-Length over the cap is answered 413 at once; a body without one (chunked)
    is counted while streamed and cut off with 413 as soon as it passes the cap, so at most
    `max_bytes` of any request is ever held. A client that stops sending mid-body (a Content-
    Length larger than what it sends, a stalled chunked stream) gets 408 after `body_timeout`
    seconds without data instead of holding its connection and buffers for ever.
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        max_bytes: int,
        body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = f"the upload limit is {self.max_bytes:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
                if length < 0:  # uvicorn's parser refuses these first; not every server does
                    raise ValueError(length)
            except ValueError:
                await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                return
            if length > self.max_bytes:
                await _send_json(send, 413, {"detail": f"request of {length:,} bytes: {limit}"})
                return
        received = 0
        body_done = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body, receive() only waits for a disconnect: no timeout
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                raise UploadError(
                    408, f"no request body data for {self.body_timeout:g} s: request abandoned"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadError(413, f"request body over {self.max_bytes:,} bytes: {limit}")
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        from starlette.requests import ClientDisconnect

        try:
            await self.app(scope, capped_receive, tracking_send)
        except ClientDisconnect:
            # The client hung up mid-body: there is nobody to answer, and it is no server
            # fault (left alone, it would be logged as "Exception in ASGI application").
            return
        except UploadError as error:
            if started:
                raise
            await _send_json(send, error.status, {"detail": error.detail})


def _served_format(data: bytes) -> str | None:
    """The served format an upload's header claims (Pillow's identification), else None."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
                return str(image.format)
    except Image.DecompressionBombError:
        return "too large"
    except Exception:  # Pillow raises many types for data it cannot identify
        return None


def decode_upload(data: bytes, name: str, channels: int, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> uint8 (C, H, W) by `ganomaly.images.load_image` (the one loader).

    Raises UploadError naming the upload (never a server path): 400 empty, 415 not an image
    of a served format, 413 too many pixels (from the header, before decoding), 422 a served
    format that does not decode (a truncated or damaged file).
    """
    from PIL import Image

    from ganomaly.images import ImageError, load_image

    if not data:
        raise UploadError(400, f"{name}: empty file")
    if _served_format(data) is None:
        formats = ", ".join(UPLOAD_FORMATS)
        raise UploadError(415, f"{name}: not a readable image of a served format ({formats})")
    with tempfile.TemporaryDirectory(prefix="ganomaly-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path, formats=UPLOAD_FORMATS) as image:  # reads the header only
                    width, height = image.size
        except Image.DecompressionBombError:
            raise UploadError(413, f"{name}: too many pixels (limit {max_pixels:,})") from None
        if width * height > max_pixels:
            raise UploadError(
                413, f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,}"
            )
        try:
            return load_image(path, channels, max_pixels)
        except ImageError as error:
            reason = str(error).removeprefix(f"{path}: ").replace(str(path), name)
            raise UploadError(422, f"{name}: {reason}") from None


def png_data_url(rgb: np.ndarray) -> str:
    """(H, W) or (H, W, 3) uint8 -> 'data:image/png;base64,...'."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _display_png(image: np.ndarray) -> str:
    """A [0, 1] image (C, H, W) as a PNG data URL."""
    pixels = np.round(image * 255.0).astype(np.uint8)
    return png_data_url(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))


@dataclass
class ServerSettings:
    """What the server serves and its limits; checked here, so Python callers of `create_app`
    get the same errors as `ganomaly serve`."""

    model_path: str | os.PathLike[str]
    api_key: str | None = None
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20)
    max_pixels: int = SERVER_MAX_PIXELS
    max_files: int = DEFAULT_MAX_FILES
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    device: str = INFERENCE_DEVICE

    def __post_init__(self) -> None:
        limits = {
            "--max-upload-mb": self.max_upload_bytes,
            "--max-pixels": self.max_pixels,
            "--max-files": self.max_files,
            "--body-timeout": self.body_timeout,
        }
        for flag, value in limits.items():
            if not value > 0:
                raise ConfigError(f"{flag} must be positive (got {value})")
        if self.api_key is not None and not self.api_key:
            raise ConfigError("the API key must not be empty")

    def limits(self) -> dict[str, int]:
        """The limits a client needs to know (GET /v1/model)."""
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "max_files": self.max_files,
        }


class ScoringService:
    """The model, loaded once; `score` is safe to call from many threads (one lock)."""

    def __init__(self, settings: ServerSettings) -> None:
        from ganomaly.detector import GANomalyDetector
        from ganomaly.export import refuse_batch_statistics

        self.settings = settings
        self.detector = GANomalyDetector.load(settings.model_path, device=settings.device)
        refuse_batch_statistics(self.detector, "served")
        self.lock = threading.Lock()

    def card(self) -> dict[str, Any]:
        """GET /v1/model: the model card, plus what a client of this server needs."""
        from ganomaly.predict import MAP_VMAX

        path = Path(self.settings.model_path)
        return {
            "name": path.name if path.is_dir() else path.parent.name,
            **self.detector.model_card(),
            "map_vmax": MAP_VMAX,
            "limits": self.settings.limits(),
            "api_key_required": self.settings.api_key is not None,
        }

    def score(
        self, arrays: list[np.ndarray], with_map: bool, with_reconstruction: bool
    ) -> list[dict[str, Any]]:
        """uint8 (C, H, W) images -> one result dict each (without the filename)."""
        import torch

        from ganomaly.images import to_display
        from ganomaly.predict import heatmap_rgb

        detector = self.detector
        # Decoded uploads are (C, H, W): say so, since a side of 1, 3 or 4 pixels is ambiguous.
        x = torch.cat([detector.preprocess(array[None], layout="NCHW") for array in arrays])
        with self.lock:
            scores = detector.score_preprocessed(x, with_maps=with_map)
            x_hat = (
                to_display(detector.reconstruct_preprocessed(x)) if with_reconstruction else None
            )
        results = []
        for i in range(len(arrays)):
            result: dict[str, Any] = {
                "score": float(scores.score[i]),
                "normalized_score": float(scores.normalized_score[i]),
                "is_anomaly": bool(scores.is_anomaly[i]),
            }
            if scores.maps is not None:
                result["anomaly_map_png"] = png_data_url(heatmap_rgb(scores.maps[i]))
            if x_hat is not None:
                result["input_png"] = _display_png(to_display(x[i : i + 1])[0])
                result["reconstruction_png"] = _display_png(x_hat[i])
            results.append(result)
        return results


# -- the HTTP layer -------------------------------------------------------------------------
ERROR_RESPONSES = {
    400: "no file, an empty file, too many files, or a malformed request",
    401: "missing or wrong API key",
    408: "the request body stopped arriving (see --body-timeout)",
    413: "request larger than the upload limit, or (every) image with too many pixels",
    415: "(every) file is not an image of a served format",
    422: "(every) file claims a served format but does not decode, or no file could be scored",
}


def score_request_body(max_files: int) -> dict[str, Any]:
    """The OpenAPI requestBody of POST /v1/score (multipart, one or more `file` fields)."""
    files = {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": f"one or more images (at most {max_files})",
    }
    schema = {"type": "object", "required": ["file"], "properties": {"file": files}}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def check_api_key(headers: Mapping[str, str], api_key: str | None) -> None:
    """Accept `X-API-Key: KEY` or `Authorization: Bearer KEY` (compared in constant time)."""
    from starlette.exceptions import HTTPException

    if api_key is None:
        return
    given = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if given is None and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise HTTPException(
            401, "missing or wrong API key (X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip


async def read_uploads(request: Any, max_files: int) -> list[tuple[str, bytes]]:
    """The multipart `file` fields of a request as (filename, bytes); request-level faults
    (no file, text instead of a file, too many files) are UploadErrors for the whole request."""
    from starlette.datastructures import UploadFile

    form = await request.form(
        max_files=max_files, max_fields=max_files + 16, max_part_size=64 * 1024
    )
    try:
        fields = form.getlist("file")
        if not fields:
            raise UploadError(400, "no image: send one or more multipart fields named 'file'")
        uploads = [f for f in fields if isinstance(f, UploadFile)]
        if len(uploads) != len(fields):
            raise UploadError(400, "the 'file' fields must be file uploads, not text")
        return [(u.filename or f"file{i + 1}", await u.read()) for i, u in enumerate(uploads)]
    finally:
        await form.close()


async def score_uploads(
    service: ScoringService, uploads: list[tuple[str, bytes]], with_map: bool, with_recon: bool
) -> dict[str, Any]:
    """Decode and score uploads file by file: a bad file gets its `error`, the rest are scored.
    When none could be scored, raises an UploadError: the files' common status, else 422."""
    from starlette.concurrency import run_in_threadpool

    settings, channels = service.settings, int(service.detector.channels_)
    rows: list[dict[str, Any]] = []
    arrays, statuses = [], []
    for name, data in uploads:
        try:
            arrays.append(
                await run_in_threadpool(decode_upload, data, name, channels, settings.max_pixels)
            )
            rows.append({"filename": name})
        except UploadError as error:
            rows.append({"filename": name, "error": error.detail})
            statuses.append(error.status)
    if not arrays:
        status = statuses[0] if len(set(statuses)) == 1 else 422
        first = rows[0]["error"]
        detail = first if len(rows) == 1 else f"no file could be scored; {first}"
        raise UploadError(status, detail)
    results = iter(await run_in_threadpool(service.score, arrays, with_map, with_recon))
    for row in rows:
        if "error" not in row:
            row.update(next(results))
    return {
        "threshold": float(service.detector.threshold_),
        "n_errors": len(statuses),
        "results": rows,
    }


def create_app(model_path: str | os.PathLike[str], **limits: Any) -> Any:
    """The ASGI application (FastAPI) serving the model at `model_path` (run dir or model.pt);
    `limits` are the other `ServerSettings` fields (api_key, max_upload_bytes, max_pixels,
    max_files, body_timeout, device), checked as the CLI checks them.

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app("runs/demo", api_key="secret"), port=8000)
    """
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.staticfiles import StaticFiles

    from ganomaly import __version__

    settings = ServerSettings(model_path, **limits)
    service = ScoringService(settings)
    schemas = response_schemas()
    app = FastAPI(
        title="ganomaly",
        version=__version__,
        description="GANomaly anomaly scoring: upload images, get raw and normalized scores "
        "(0 = a typical normal image, 1 = the threshold) and a verdict; a file that cannot be "
        "scored gets its `error` while the others are scored.",
    )
    install_error_handlers(app)

    def key(request: Request) -> None:
        check_api_key(request.headers, settings.api_key)

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": schemas.error, "description": text}
        for code, text in ERROR_RESPONSES.items()
    }

    @app.post(
        "/v1/score", response_model=schemas.score, response_model_exclude_none=True,
        responses=errors, openapi_extra=score_request_body(settings.max_files),
        dependencies=[Depends(key)], summary="Score one or more images",
    )  # fmt: skip
    async def score(
        request: Request,
        anomaly_map: bool = Query(False, description="add each anomaly map as a PNG data URL"),
        reconstruction: bool = Query(False, description="add the model input and x_hat as PNGs"),
    ) -> dict[str, Any]:
        uploads = await read_uploads(request, settings.max_files)
        return await score_uploads(service, uploads, anomaly_map, reconstruction)

    @app.get("/v1/model", dependencies=[Depends(key)], responses=errors, summary="Model card")
    async def model_card() -> dict[str, Any]:
        return service.card()

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        from fastapi.responses import FileResponse

        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(
        UploadLimit, max_bytes=settings.max_upload_bytes, body_timeout=settings.body_timeout
    )
    app.state.service = service
    return app


@dataclass
class ResponseSchemas:
    score: type
    error: type


@functools.cache
def response_schemas() -> ResponseSchemas:
    """The pydantic models of the JSON answers (built on first use: pydantic comes with the
    optional serve extra)."""
    from pydantic import BaseModel

    class ScoreResult(BaseModel):
        filename: str
        score: float | None = None
        normalized_score: float | None = None
        is_anomaly: bool | None = None
        error: str | None = None
        anomaly_map_png: str | None = None
        input_png: str | None = None
        reconstruction_png: str | None = None

    class ScoreResponse(BaseModel):
        threshold: float
        n_errors: int
        results: list[ScoreResult]

    class ErrorResponse(BaseModel):
        detail: str

    return ResponseSchemas(ScoreResponse, ErrorResponse)


def install_error_handlers(app: Any) -> None:
    """Every error is JSON `{"detail": one line}` with its status (never an HTML page)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def http_error(request: Any, error: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(error.detail)}, error.status_code, error.headers)

    async def validation_error(request: Any, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, 422)

    async def upload_error(request: Any, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, error.status, _closing(error.status))

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(UploadError, upload_error)


def cmd_serve(args: argparse.Namespace) -> int:
    """Handler of `ganomaly serve`."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise ConfigError(
            f"serve needs the serve extra ({error.name} is missing): pip install 'ganomaly[serve]'"
        ) from None
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be between 0 and 65535")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(
                f"--api-key-env {args.api_key_env}: that environment variable is empty or unset"
            )
    app = create_app(
        args.run_dir,
        api_key=api_key,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        max_files=args.max_files,
        body_timeout=args.body_timeout,
        device=args.device,
    )
    guard = " (API key required on /v1)" if api_key else ""
    print(
        f"ganomaly: serving {args.run_dir} on http://{args.host}:{args.port}{guard}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level,
        timeout_keep_alive=5, server_header=False,
    )  # fmt: skip
    return 0


def register(subparsers: Any) -> None:
    """Add the `serve` sub-command."""
    from ganomaly.cli import describe

    parser = subparsers.add_parser("serve", help="HTTP scoring service with a web page")
    describe(
        parser,
        "Serve a model over HTTP: POST /v1/score (multipart fields named 'file'), GET "
        "/v1/model, GET /healthz, and a web page at /. The model is loaded once.",
        """
  ganomaly serve runs/parts                                 # http://127.0.0.1:8000/
  ganomaly serve runs/parts --host 0.0.0.0 --port 8080 --api-key-env GANOMALY_API_KEY
  curl -F file=@part.png http://127.0.0.1:8000/v1/score
""",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR|MODEL", help="a run directory or a model.pt")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--api-key-env", metavar="NAME",
        help="require the API key held in this environment variable on /v1 routes",
    )  # fmt: skip
    parser.add_argument(
        "--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest request body in MiB (default: {DEFAULT_MAX_UPLOAD_MB:g})",
    )  # fmt: skip
    parser.add_argument(
        "--max-pixels", type=int, default=SERVER_MAX_PIXELS,
        help=f"largest image, width x height (default: {SERVER_MAX_PIXELS:,})",
    )  # fmt: skip
    parser.add_argument(
        "--max-files", type=int, default=DEFAULT_MAX_FILES,
        help=f"most images per request (default: {DEFAULT_MAX_FILES})",
    )  # fmt: skip
    parser.add_argument(
        "--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, metavar="S",
        help="answer 408 when a request body sends nothing for S seconds "
        f"(default: {DEFAULT_BODY_TIMEOUT_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--device", default=INFERENCE_DEVICE, help="cpu, cuda or cuda:N (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="server log detail (default: %(default)s)",
    )
    parser.set_defaults(handler=cmd_serve)
