"""Translate photos and videos with a trained generator (ours, or the authors' Shinkai_net_G.pth).

    scenimefy translate --checkpoint runs/scenimefy-paper/generator.pt --out anime/ photos/ more.jpg
    scenimefy translate --checkpoint G.pt --out anime/ --max-side 1024 --set translate.tile_overlap=64 photos/
    scenimefy translate --checkpoint G.pt --out anime/ --max-side 720 clip.mp4 holiday/
    scenimefy translate --checkpoint G.onnx --backend onnxruntime --out anime/ photos/

Videos (mp4, mov, mkv, webm) keep their container, frame rate, timestamps and audio.

Options left unset take the config's `translate` section.
"""

from __future__ import annotations

import argparse
from typing import Any

from scenimefy.commands.options import add_config_option, add_set_option

HELP = "translate photos with a trained generator"


def _from_config(key: str, what: str = "") -> str:
    """`(default: translate.KEY of --config, V in the default preset)`: what an option left unset takes."""
    from scenimefy.config import TranslateConfig

    value = getattr(TranslateConfig(), key)
    shown = f"{value:g}" if isinstance(value, float) else value
    return f"(default: translate.{key} of --config; {shown}{what} unless the preset sets it)".replace("%", "%%")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image or video files, or folders of them (recursive)")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="our generator.pt / checkpoint dir, Shinkai_net_G.pth, an exported .safetensors, "
        "or an .onnx (with --backend onnxruntime)",
    )
    p.add_argument(
        "--out", required=True, help="output folder (file names are kept: images as PNG, videos in their container)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="images (or tiles) per generator pass, fewer for large images when the memory budget asks "
        + _from_config("batch_size", " images"),
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="PX",
        help="downscale so the longer side is at most this many pixels, 0: keep " + _from_config("max_side", " px"),
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="PX",
        help="translate in overlapping tiles of this many pixels, 0: whole images (tiled only when over the memory "
        "budget) " + _from_config("tile", " px"),
    )
    p.add_argument(
        "--memory-budget-gib",
        type=float,
        default=None,
        metavar="GIB",
        help="memory in GiB for translating one image: its decoded, padded and output copies and the generator's "
        "passes (PyTorch and the weights, about 0.5 GiB, come on top); larger images are tiled and batches shrink; "
        "0: 70%% of the free memory " + _from_config("memory_budget_gib", " GiB"),
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=None,
        help="where the generator runs; auto: cuda when a GPU is visible, else cpu " + _from_config("device"),
    )
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default=None,
        help="torch, or onnxruntime for an .onnx from `scenimefy export` (default: translate.backend, torch)",
    )
    p.add_argument(
        "--video-smoothing",
        type=float,
        default=None,
        metavar="A",
        help="videos: weight of past frames in the normalisation statistics, 0 <= A < 1; 0: per frame "
        "(default: translate.video_smoothing)",
    )
    p.add_argument(
        "--keep-tone",
        type=float,
        default=None,
        metavar="S",
        help="put each photo's brightness, contrast and colour cast back on its translation, 0 <= S <= 1; 0: the "
        "generator's own tones, 1: the photo's (night stays night) " + _from_config("keep_tone"),
    )
    add_config_option(p, " whose translate section gives the defaults")
    add_set_option(p, "translate", "translate.tile_overlap=64 (in px)")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The options that stand for config keys, applied after --set so the option wins."""
    keys = {
        "backend": "translate.backend",
        "video_smoothing": "translate.video_smoothing",
        "keep_tone": "translate.keep_tone",
    }
    return [f"{key}={getattr(args, name)}" for name, key in keys.items() if getattr(args, name) is not None]


def run(args: argparse.Namespace) -> int:
    """Translate images and videos; exit 1 when nothing was written."""
    import os

    from scenimefy.config import load_config

    tr = load_config(args.config, [*args.overrides, *_overrides(args)]).translate
    from scenimefy.inference.backends import load_backend
    from scenimefy.inference.translate import TranslateReport, translate_paths
    from scenimefy.inference.video import VIDEO_EXTENSIONS, is_video, translate_videos
    from scenimefy.stages.device import resolve_device

    device = resolve_device(args.device or tr.device)
    generator = load_backend(args.checkpoint, tr.backend, device)
    batch_size = args.batch_size or tr.batch_size
    max_side = args.max_side if args.max_side is not None else tr.max_side
    memory_budget_gib = args.memory_budget_gib if args.memory_budget_gib is not None else tr.memory_budget_gib
    images = [p for p in args.inputs if os.path.isdir(p) or not is_video(p)]
    report = TranslateReport()
    if images:
        report = translate_paths(
            generator,
            images,
            args.out,
            batch_size=batch_size,
            max_side=max_side,
            tile=args.tile if args.tile is not None else tr.tile,
            tile_overlap=tr.tile_overlap,
            device=device,
            memory_budget_gib=memory_budget_gib,
            exclude_extensions=VIDEO_EXTENSIONS,
            keep_tone=tr.keep_tone,
        )
    videos = translate_videos(
        generator,
        args.inputs,
        args.out,
        batch_size=batch_size,
        max_side=max_side,
        smoothing=tr.video_smoothing,
        keep_tone=tr.keep_tone,
        device=device,
        memory_budget_gib=memory_budget_gib,
    )
    for line in summary(report, args.out, videos):
        print(line)
    return 0 if report.written or videos.written else 1


def summary(report: Any, out: str, videos: Any = None) -> list[str]:
    """The lines after a translation: counts, and how each input whose name was taken was named.

    Skipped inputs are not repeated: each was reported on stderr as it was skipped.
    """
    n_skipped = len(report.skipped) + (len(videos.skipped) if videos is not None else 0)
    skipped = f"; skipped {n_skipped} input(s), listed above" if n_skipped else ""
    written_videos = videos.written if videos is not None else []
    if not report.written and not written_videos:
        return [f"no image translated, nothing written{skipped}"]
    tiled = f" ({len(report.auto_tiled)} in tiles to fit memory)" if report.auto_tiled else ""
    what = f"{len(report.written)} image(s){tiled}"
    if written_videos:
        frames = sum(v.frames for v in written_videos)
        seconds = sum(v.seconds for v in written_videos)
        rate = f", {frames / seconds:.1f} frames/s" if seconds > 0 else ""
        what += f" and {len(written_videos)} video(s) ({frames} frames{rate})"
    lines = [f"translated {what} into {out}{skipped}"]
    if report.renamed:
        lines.append(f"{len(report.renamed)} input(s) share a name with an earlier one and were renamed:")
        lines += [f"  {src} -> {output}, since {first} has that name" for src, output, first in report.renamed]
    return lines
