"""`ganomaly serve`: an HTTP scoring service with a web page, over one loaded model.

    ganomaly serve runs/demo --host 127.0.0.1 --port 8000 [--api-key-env GANOMALY_API_KEY]

Routes (OpenAPI schema at /openapi.json):
    POST /v1/score      multipart, one or more `file` fields -> {"threshold", "results": [...]}
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
import hmac
import io
import json
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly.config import ConfigError
from ganomaly.images import ImageError, load_image

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 25_000_000
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


def decode_upload(data: bytes, name: str, channels: int, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> uint8 (C, H, W) by `ganomaly.images.load_image` (the one loader)."""
    from PIL import Image

    if not data:
        raise UploadError(400, f"{name}: empty file")
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
        except Exception as error:  # Pillow raises many types for data it cannot identify
            reason = str(error).replace(str(path), name).replace("'upload'", repr(name))
            formats = ", ".join(UPLOAD_FORMATS)
            raise UploadError(
                415, f"{name}: not a readable image of a served format ({formats}): {reason}"
            ) from None
        if width * height > max_pixels:
            raise UploadError(
                413, f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,}"
            )
        try:
            return load_image(path, channels, max_pixels)
        except ImageError as error:
            raise UploadError(415, str(error).replace(str(path), name)) from None


def png_data_url(rgb: np.ndarray) -> str:
    """(H, W) or (H, W, 3) uint8 -> 'data:image/png;base64,...'."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class ScoringService:
    """The model, loaded once; `score` is safe to call from many threads (one lock)."""

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu") -> None:
        from ganomaly.detector import GANomalyDetector
        from ganomaly.export import refuse_batch_statistics

        self.model_path = Path(model_path)
        self.detector = GANomalyDetector.load(model_path, device=device)
        refuse_batch_statistics(self.detector, "served")
        self.lock = threading.Lock()

    def card(self) -> dict[str, Any]:
        """Model card for GET /v1/model."""
        from ganomaly import __version__
        from ganomaly.predict import MAP_VMAX

        detector, config = self.detector, self.detector.config
        card = detector.card_
        name = self.model_path.name if self.model_path.is_dir() else self.model_path.parent.name
        keys = ("n_train", "train_seconds", "train_images_per_second", "d_reinits")
        return {
            "name": name,
            "data": card.get("data"),
            "protocol": card.get("protocol"),
            "target_class": card.get("target_class"),
            "normal_classes": card.get("normal_classes"),
            "data_source": card.get("data_source"),
            "image_size": list(config.image_hw()),
            "channels": int(detector.channels_),
            "interpolation": config.interpolation,
            "score_metric": config.score_metric,
            "bn_mode": config.bn_mode,
            "threshold": float(detector.threshold_),
            "threshold_quantile": detector.threshold_quantile_,
            "val_median": float(detector.val_median_),
            "n_val": int(detector.n_val_),
            "epochs": config.epochs,
            "metrics": card.get("metrics", {}),
            "training": {k: card[k] for k in keys if k in card},
            "map_vmax": MAP_VMAX,
            "ganomaly_version": __version__,
        }

    def score(
        self, arrays: list[np.ndarray], with_map: bool, with_reconstruction: bool
    ) -> list[dict[str, Any]]:
        """uint8 (C, H, W) images -> one result dict each (without the filename)."""
        import torch

        from ganomaly.images import to_display
        from ganomaly.predict import heatmap_rgb

        detector = self.detector
        x = torch.cat([detector.preprocess(array[None]) for array in arrays])  # (B, C, H, W)
        with self.lock, torch.inference_mode():
            scores, normalized, maps = detector._score(x, with_maps=with_map)
            x_hat = None
            if with_reconstruction:
                device = next(detector.generator_.parameters()).device
                x_hat = to_display(detector.generator_(x.to(device))[0])
        results = []
        for i in range(len(arrays)):
            result: dict[str, Any] = {
                "score": float(scores[i]),
                "normalized_score": float(normalized[i]),
                "is_anomaly": bool(scores[i] > detector.threshold_),
            }
            if maps is not None:
                result["anomaly_map_png"] = png_data_url(heatmap_rgb(maps[i]))
            if x_hat is not None:
                for key, image in (
                    ("input_png", to_display(x[i : i + 1])[0]),
                    ("reconstruction_png", x_hat[i]),
                ):
                    pixels = np.round(image * 255.0).astype(np.uint8)  # (C, H, W)
                    result[key] = png_data_url(
                        pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)
                    )
            results.append(result)
        return results


def create_app(
    model_path: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_files: int = DEFAULT_MAX_FILES,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
    device: str = "cpu",
) -> Any:
    """The ASGI application (FastAPI) serving the model at `model_path` (run dir or model.pt).

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app("runs/demo", api_key="secret"), port=8000)
    """
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    from ganomaly import __version__

    service = ScoringService(model_path, device)
    channels = int(service.detector.channels_)

    class ScoreResult(BaseModel):
        filename: str
        score: float
        normalized_score: float
        is_anomaly: bool
        anomaly_map_png: str | None = None
        input_png: str | None = None
        reconstruction_png: str | None = None

    class ScoreResponse(BaseModel):
        threshold: float
        results: list[ScoreResult]

    class ErrorResponse(BaseModel):
        detail: str

    app = FastAPI(
        title="ganomaly",
        version=__version__,
        description="GANomaly anomaly scoring: upload images, get raw and normalized scores "
        "(0 = a typical normal image, 1 = the threshold) and a verdict.",
    )
    app.state.service = service

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(error.detail)}, error.status_code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, 422)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, error.status, _closing(error.status))

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if given is None and authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(
                401, "missing or wrong API key (X-API-Key or Authorization: Bearer)",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in (
            (400, "no file, an empty file, too many files, or a malformed request"),
            (401, "missing or wrong API key"),
            (408, "the request body stopped arriving (see --body-timeout)"),
            (413, "request larger than the upload limit, or an image with too many pixels"),
            (415, "a file that is not a readable image"),
        )
    }
    upload_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": f"one or more images (at most {max_files})",
                            }
                        },
                    }
                }
            },
        }
    }

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        response_model_exclude_none=True,
        responses=errors,
        openapi_extra=upload_body,
        dependencies=[Depends(check_key)],
        summary="Score one or more images",
    )
    async def score(
        request: Request,
        anomaly_map: bool = Query(False, description="add each anomaly map as a PNG data URL"),
        reconstruction: bool = Query(False, description="add the model input and x_hat as PNGs"),
    ) -> dict[str, Any]:
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
            names, arrays = [], []
            for i, upload in enumerate(uploads):
                name = upload.filename or f"file{i + 1}"
                data = await upload.read()
                arrays.append(
                    await run_in_threadpool(decode_upload, data, name, channels, max_pixels)
                )
                names.append(name)
        finally:
            await form.close()
        results = await run_in_threadpool(service.score, arrays, anomaly_map, reconstruction)
        return {
            "threshold": float(service.detector.threshold_),
            "results": [{"filename": n, **r} for n, r in zip(names, results, strict=True)],
        }

    @app.get("/v1/model", dependencies=[Depends(check_key)], responses=errors, summary="Model card")
    async def model_card() -> dict[str, Any]:
        return {
            **service.card(),
            "limits": {
                "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels,
                "max_files": max_files,
            },
            "api_key_required": api_key is not None,
        }

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes, body_timeout=body_timeout)
    return app


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
    if min(args.max_upload_mb, args.max_pixels, args.max_files, args.body_timeout) <= 0:
        raise ConfigError(
            "--max-upload-mb, --max-pixels, --max-files and --body-timeout must be positive"
        )
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
    parser = subparsers.add_parser(
        "serve",
        help="HTTP scoring service with a web page",
        description="Serve a model over HTTP: POST /v1/score, GET /v1/model, GET /healthz, and a "
        "web page at /. The model is loaded once.",
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
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help=f"largest image, width x height (default: {DEFAULT_MAX_PIXELS:,})",
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    parser.set_defaults(handler=cmd_serve)
