"""The Ray Serve application of `scenimefy serve`: a batching translator behind a FastAPI ingress.

    Api (ingress, no model, no CPU reserved)          Translator (N replicas, one model copy each)
      GET  /            the web page (static/)          __call__(image) -> (translated, batch size)
      GET  /healthz                                      @serve.batch: requests collected for up to
      GET  /v1/model                                     batch_wait_timeout_s, grouped by padded size,
      POST /v1/translate  limits, decode, resize   -->   one G pass per group (MemoryPlan-sized);
                          encode the result              images too large for one pass: blended tiles
                          a video: probe, limits   -->   translate_video(bytes) in a thread, frames
                                                         a few per pass between the image batches

The ingress enforces the upload and pixel limits and decodes in a thread; the translator's
handle queue is bounded (`max_queued_requests`), and a full queue is answered 503 with
Retry-After. Translation is `scenimefy.inference.translate`, the path of `scenimefy translate`.

Videos: the ingress recognises one by its first bytes, probes its header and first frame
(`handling.check_video`: 413 / 415 / 422 before anything else is decoded) and sends the bytes to
a replica, which runs `scenimefy.inference.video.translate_video` (the path of `scenimefy
translate`) in a thread and answers the encoded file. A replica runs one G pass at a time
(`pass_lock`): a video holds it for one pass of `video_batch_size` frames and releases it while
it decodes and encodes, so image batches on the same replica wait for the video pass under way,
not for the whole video. The replica enforces `video_timeout_s` and the frame limit while decoding.
README "Serve" has the two ways to run it; `build_app` is the builder that Serve config files
(cluster/serve-scenimefy.yaml) name.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at runtime.

import asyncio
import dataclasses
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from scenimefy.config import ConfigError, ServeConfig, load_config
from scenimefy.serve import handling
from scenimefy.serve.handling import ApiError

logger = logging.getLogger("ray.serve")

APP_NAME = "scenimefy"
STATIC_FILES = {"index.html": "text/html", "app.css": "text/css", "app.js": "text/javascript"}
# Seconds a client is told to wait after a 503 (queue full).
RETRY_AFTER_S = 1
# Slack over max_upload_mib for the multipart envelope around the file.
MULTIPART_SLACK = 64 * 1024


def serve_config(overrides: Mapping[str, Any] | None = None, base: ServeConfig | None = None) -> ServeConfig:
    """A validated `serve` section: `base` (default: the defaults) with `overrides` (key -> value)."""
    cfg = dataclasses.replace(base or ServeConfig())
    known = {f.name for f in dataclasses.fields(ServeConfig)}
    items = [f"serve.{k}={v}" for k, v in (overrides or {}).items()]
    for key in overrides or {}:
        if key not in known:
            raise ConfigError(f"serve option {key!r} is unknown; valid: {', '.join(sorted(known))}")
    if items:
        full = load_config(None, items)
        cfg = dataclasses.replace(cfg, **{k: getattr(full.serve, k) for k in overrides})
    if cfg.replicas == 0 and cfg.min_replicas > cfg.max_replicas:
        raise ConfigError(
            f"serve.min_replicas={cfg.min_replicas} exceeds serve.max_replicas={cfg.max_replicas}: "
            "set min_replicas <= max_replicas"
        )
    return cfg


# ----------------------------------------------------------------------------------------
# The translator deployment


@serve.deployment(name="Translator")
class Translator:
    """One generator per replica; requests batched by `@serve.batch`, one G pass per padded size."""

    def __init__(self, checkpoint: str, settings: dict[str, Any]):
        import torch

        from scenimefy.inference.translate import MemoryPlan, load_translator
        from scenimefy.stages.device import resolve_device

        cfg = ServeConfig(**settings)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.cpus_per_replica)
        self.generator = load_translator(checkpoint, self.device)
        want_bf16 = cfg.precision == "bf16" or (
            cfg.precision == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        if cfg.precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("serve.precision=bf16 needs a GPU replica: set serve.device=cuda or precision=fp32")
        self.dtype = torch.bfloat16 if want_bf16 else None
        self.plan = MemoryPlan.for_generator(self.generator, self.device, cfg.memory_budget_gib)
        self.info = handling.model_info(checkpoint, self.generator.arch, _snapshot_config(checkpoint))
        self.info["serving"] = {
            "device": str(self.device),
            "precision": "bf16" if want_bf16 else "fp32",
            "max_batch_size": cfg.max_batch_size,
            "keep_tone": cfg.keep_tone,
        }
        self.translate_batched.set_max_batch_size(cfg.max_batch_size)
        self.translate_batched.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        # One G pass at a time: image batches and the frame batches of videos take turns.
        self.pass_lock = threading.Lock()

    def model_info(self) -> dict[str, Any]:
        return self.info

    async def __call__(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """(H, W, 3) uint8 -> the translated (H, W, 3) uint8 and the size of the batch it ran in."""
        from scenimefy.inference.translate import padded_size

        h, w = image.shape[:2]
        if self.plan.tile_for(*padded_size(h, w), overlap=self.cfg.tile_overlap):
            return await asyncio.to_thread(self._tiled, image), 1
        return await self.translate_batched(image)

    async def translate_video(self, data: bytes, ext: str, max_side: int, max_frames: int) -> dict[str, Any]:
        """An uploaded video (`ext`: its container) -> {"body": the translated file, "frames", ...},
        or {"status": 4xx/504, "error": one line} when it fails or passes a limit while decoding."""
        return await asyncio.to_thread(self._video, data, ext, max_side, max_frames)

    def _video(self, data: bytes, ext: str, max_side: int, max_frames: int) -> dict[str, Any]:
        from scenimefy.inference.video import VideoError, VideoLimitError, translate_video

        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="scenimefy-video-") as tmp:
            src, dst = os.path.join(tmp, f"upload{ext}"), os.path.join(tmp, f"anime{ext}")
            with open(src, "wb") as f:
                f.write(data)
            try:
                report = translate_video(
                    self.generator,
                    src,
                    dst,
                    batch_size=self.cfg.video_batch_size,
                    max_side=max_side,
                    smoothing=self.cfg.video_smoothing,
                    keep_tone=self.cfg.keep_tone,
                    device=self.device,
                    memory_budget_gib=self.cfg.memory_budget_gib,
                    progress=False,
                    pass_lock=self.pass_lock,
                    max_frames=max_frames,
                    deadline=started + self.cfg.video_timeout_s,
                )
            except VideoLimitError as e:
                reason = str(e).removeprefix(f"{src}: ")
                if "not done in time" in reason:
                    return {"status": 504, "error": f"video {reason} (over {self.cfg.video_timeout_s:g} s); "
                            "send a shorter clip or a smaller max_side"}  # fmt: skip
                return {"status": 413, "error": f"video: {reason} of serve.max_video_pixels; send a shorter clip"}
            except VideoError as e:
                reason = str(e).removeprefix(f"{src}: ")
                return {"status": 422, "error": f"video: {reason}; the file is damaged or truncated, send it again"}
            with open(dst, "rb") as f:
                body = f.read()
        size = f"{report.width}x{report.height}"
        return {"body": body, "frames": report.frames, "size": size, "rotation": report.rotation, "fps": report.fps}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def translate_batched(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        # A G pass runs in a thread so the replica keeps accepting requests into the next batch.
        return await asyncio.to_thread(self._translate_groups, images)

    def _autocast(self):
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _translate_groups(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        from scenimefy.data.images import from_uint8, to_uint8
        from scenimefy.inference.tone import keep_tone
        from scenimefy.inference.translate import padded_size, translate_batch

        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(padded_size(*im.shape[:2]), []).append(i)
        out: list[tuple[np.ndarray, int] | None] = [None] * len(images)
        for key, indices in groups.items():
            per_pass = self.plan.batch_for(*key, len(indices))
            for start in range(0, len(indices), per_pass):
                chunk = indices[start : start + per_pass]
                xs = [from_uint8(images[i].copy())[0] for i in chunk]  # arrays from Ray are read-only
                with self.pass_lock, self._autocast():
                    ys = translate_batch(self.generator, xs)
                for i, x, y in zip(chunk, xs, ys, strict=True):
                    out[i] = (to_uint8(keep_tone(y.float(), x, self.cfg.keep_tone).cpu()), len(chunk))
        return out  # type: ignore[return-value]

    def _tiled(self, image: np.ndarray) -> np.ndarray:
        from scenimefy.data.images import from_uint8, to_uint8
        from scenimefy.inference.tone import keep_tone
        from scenimefy.inference.translate import padded_size, translate_tiled

        tile = self.plan.tile_for(*padded_size(*image.shape[:2]), overlap=self.cfg.tile_overlap)
        x = from_uint8(image.copy())[0]
        with self.pass_lock, self._autocast():
            y = translate_tiled(self.generator, x, tile=tile, tile_overlap=self.cfg.tile_overlap, batch_size=1)
        return to_uint8(keep_tone(y.float(), x, self.cfg.keep_tone).cpu())


def _snapshot_config(checkpoint: str) -> dict | None:
    """The training config stored in our snapshot, None for the authors' state dicts."""
    import torch

    from scenimefy.stages.checkpoint import TRANSLATOR_SNAPSHOT_FILE

    path = os.path.join(checkpoint, TRANSLATOR_SNAPSHOT_FILE) if os.path.isdir(checkpoint) else checkpoint
    obj = torch.load(path, map_location="cpu", weights_only=True)
    config = obj.get("config") if isinstance(obj, dict) and "format" in obj else None
    return config if isinstance(config, dict) else None


# ----------------------------------------------------------------------------------------
# The HTTP ingress

api = FastAPI(title="scenimefy", docs_url=None, redoc_url=None, openapi_url=None)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=dict(headers or {}))


def _static(name: str) -> Response:
    data = (resources.files("scenimefy.serve") / "static" / name).read_bytes()
    return Response(data, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


@serve.deployment(name="Api")
@serve.ingress(api)
class Api:
    """Limits, decoding and encoding; the model lives in the Translator replicas."""

    def __init__(self, translator: DeploymentHandle, settings: dict[str, Any]):
        self.translator = translator
        self.cfg = ServeConfig(**settings)
        self.max_bytes = int(self.cfg.max_upload_mib * 2**20)
        self.max_video_bytes = int(self.cfg.max_video_upload_mib * 2**20)
        self.info: dict[str, Any] | None = None

    @api.get("/")
    def index(self) -> Response:
        return _static("index.html")

    @api.get("/app.css")
    def css(self) -> Response:
        return _static("app.css")

    @api.get("/app.js")
    def js(self) -> Response:
        return _static("app.js")

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/model")
    async def model(self) -> dict[str, Any]:
        if self.info is None:
            self.info = await self.translator.model_info.remote()
        limits = {
            "max_upload_bytes": self.max_bytes,
            "max_pixels": self.cfg.max_pixels,
            "max_side": self.cfg.max_side,
            "request_timeout_s": self.cfg.request_timeout_s,
            "formats": sorted(set(handling.FORMATS) - {"jpg"}),
            "max_video_upload_bytes": self.max_video_bytes,
            "max_video_pixels": self.cfg.max_video_pixels,
            "video_timeout_s": self.cfg.video_timeout_s,
            "video_containers": sorted(ext.lstrip(".") for ext in handling.VIDEO_MEDIA_TYPES),
        }
        return {**self.info, "limits": limits}

    @api.post("/v1/translate")
    async def translate(self, request: Request) -> Response:
        """The image or video as the body (any media type) or as multipart field `image` (or the
        first file); options `max_side`, `format` (png | jpeg | webp), `quality` in the query
        string or as multipart fields. Answers the translated image at the input's size, or the
        translated video in the upload's container (`format` and `quality` are for images)."""
        started = time.perf_counter()
        try:
            data, name, fields, content_type = await self._read_upload(request)
            options = handling.parse_options({**request.query_params, **fields}, self.cfg.max_side)
            ext = handling.video_container(data, name, content_type)
            if ext is not None:
                return await self._video(data, name, ext, options, started)
            handling.check_size(len(data), self.max_bytes)
            img = await asyncio.to_thread(handling.decode_upload, data, name, self.cfg.max_pixels)
            small = handling.downscale(img, options.max_side)
            array = np.asarray(small, dtype=np.uint8)
            translated, batch = await self._translate(array)
            body, media_type = await asyncio.to_thread(
                lambda: handling.encode(handling.restore_size(translated, img.size), options)
            )
        except ApiError as e:
            return _error(e.status, e.message, e.headers)
        except Exception as e:  # a server-side failure (a replica lost, out of memory): 500, still JSON
            logger.exception("translation failed")
            return _error(500, f"the server failed to translate the upload ({_reason(e)}); retry or report it")
        headers = {
            "X-Image-Size": f"{img.size[0]}x{img.size[1]}",
            "X-Translated-Size": f"{small.size[0]}x{small.size[1]}",
            "X-Batch-Size": str(batch),
            "X-Elapsed-Ms": f"{(time.perf_counter() - started) * 1000:.1f}",
            "Content-Disposition": f'inline; filename="{handling.result_name(name, options)}"',
        }
        return Response(body, media_type=media_type, headers=headers)

    async def _video(self, data: bytes, name: str, ext: str, options: handling.Options, started: float) -> Response:
        """Check, translate and answer an uploaded video (ApiError for the 4xx/5xx answers)."""
        handling.check_size(len(data), self.max_video_bytes, "serve.max_video_upload_mib")
        plan = await asyncio.to_thread(handling.check_video, data, name, options.max_side, self.cfg.max_video_pixels)
        response = self.translator.translate_video.remote(data, ext, options.max_side, plan.max_frames)
        try:
            # the replica stops at video_timeout_s itself; this bounds a replica that does not answer
            result = await asyncio.wait_for(response, timeout=self.cfg.video_timeout_s + 60)
        except BackPressureError:
            raise ApiError(
                503,
                "the server is at capacity (translation queue full); retry after the time in Retry-After",
                {"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(504, f"the video took over {self.cfg.video_timeout_s:g} s; send a shorter clip") from None
        if "error" in result:
            raise ApiError(result["status"], f"{name}: {result['error']}")
        headers = {
            "X-Video-Frames": str(result["frames"]),
            "X-Video-Size": result["size"],
            "X-Video-Rotation": str(result["rotation"]),
            "X-Elapsed-Ms": f"{(time.perf_counter() - started) * 1000:.1f}",
            "Content-Disposition": f'inline; filename="{handling.video_result_name(name, ext)}"',
        }
        return Response(result["body"], media_type=handling.VIDEO_MEDIA_TYPES[ext], headers=headers)

    async def _read_upload(self, request: Request) -> tuple[bytes, str, dict[str, str], str]:
        """(bytes, a name for messages, multipart text fields, the file's media type); 413 past the
        upload limit (the video limit until the bytes show what the upload is)."""
        length = request.headers.get("content-length")
        content_type = request.headers.get("content-type", "")
        is_multipart = content_type.startswith("multipart/form-data")
        most = self.max_bytes if content_type.startswith("image/") else max(self.max_bytes, self.max_video_bytes)
        setting = "serve.max_upload_mib" if most == self.max_bytes else "serve.max_video_upload_mib"
        slack = MULTIPART_SLACK if is_multipart else 0
        if length and length.isdigit():
            handling.check_size(int(length) - slack, most, setting)
        if not is_multipart:
            chunks, total = [], 0
            async for chunk in request.stream():
                total += len(chunk)
                handling.check_size(total, most, setting)
                chunks.append(chunk)
            return b"".join(chunks), request.query_params.get("name", "upload"), {}, content_type
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as e:  # a malformed multipart body or more than one file
            raise ApiError(400, f"malformed multipart upload ({_reason(e)}); send one file as field 'image'") from None
        fields: dict[str, str] = {}
        upload = None
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields[key] = value
            elif upload is None or key == "image":
                upload = value
        if upload is None:
            raise ApiError(400, "multipart upload without a file; send the image as field 'image'")
        data = await upload.read(most + 1)
        handling.check_size(len(data), most, setting)
        return data, upload.filename or "upload", fields, upload.content_type or ""

    async def _translate(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        response = self.translator.remote(array)
        try:
            return await asyncio.wait_for(response, timeout=self.cfg.request_timeout_s)
        except BackPressureError:
            raise ApiError(
                503,
                "the server is at capacity (translation queue full); retry after the time in Retry-After",
                {"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(
                504,
                f"translation took over {self.cfg.request_timeout_s:g} s; send a smaller image (max_side) or retry",
            ) from None


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


# ----------------------------------------------------------------------------------------
# Building and starting


def use_gpu(cfg: ServeConfig) -> bool:
    """Whether a translator replica asks Ray for a GPU: device cuda, or auto on a cluster with GPUs."""
    if cfg.device == "cuda":
        return True
    if cfg.device == "auto":
        import ray

        return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    return False


def check_checkpoint(checkpoint: str) -> None:
    """A wrong checkpoint fails here, in one line, before Ray or any replica starts."""
    from scenimefy.inference.translate import load_translator

    load_translator(checkpoint, "cpu")


def build(checkpoint: str, cfg: ServeConfig) -> serve.Application:
    """The application for `checkpoint` (a path every replica can read) under `cfg`."""
    check_checkpoint(checkpoint)
    settings = dataclasses.asdict(cfg)
    if cfg.replicas:
        scaling: dict[str, Any] = {"num_replicas": cfg.replicas}
        most = cfg.replicas
    else:
        scaling = {
            "autoscaling_config": {
                "min_replicas": cfg.min_replicas,
                "max_replicas": cfg.max_replicas,
                "target_ongoing_requests": max(1, cfg.max_batch_size),
            }
        }
        most = cfg.max_replicas
    actor = {"num_cpus": cfg.cpus_per_replica, "num_gpus": 1 if use_gpu(cfg) else 0}
    translator = Translator.options(
        ray_actor_options=actor,
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        **scaling,
    ).bind(os.path.abspath(checkpoint) if "://" not in checkpoint else checkpoint, settings)
    ingress_capacity = cfg.max_queued_requests + cfg.max_ongoing_requests * most + 32
    return Api.options(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=ingress_capacity, num_replicas=1).bind(
        translator, settings
    )


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for Serve config files: `args` has `checkpoint` and any `serve.*` keys."""
    args = dict(args)
    checkpoint = args.pop("checkpoint", None)
    if not checkpoint:
        raise ConfigError("the serve application needs args.checkpoint: the generator.pt every replica can read")
    return build(str(checkpoint), serve_config(args))


def start(checkpoint: str, cfg: ServeConfig, *, address: str | None = None) -> str:
    """Start (or join, with `address`) Ray, run the application and return the page's URL."""
    from scenimefy.distributed.cluster import init_ray

    check_checkpoint(checkpoint)
    if address:
        os.environ["RAY_ADDRESS"] = address
    else:
        # A Ray started here runs its workers at niceness 0, not Ray's default of 15: the replicas
        # answer people waiting, and on a machine shared with other work they would otherwise get
        # a fraction of its CPU (BENCHMARKS.md, "Serving").
        os.environ.setdefault("RAY_worker_niceness", "0")
    most = cfg.replicas or cfg.max_replicas
    init_ray(num_cpus_needed=cfg.cpus_per_replica * most)
    app = build(checkpoint, cfg)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(app, name=APP_NAME, route_prefix="/")
    host = cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.port}/"


def stop() -> None:
    """Shut the application and Serve down (the Ray cluster stays as it was started)."""
    serve.shutdown()
