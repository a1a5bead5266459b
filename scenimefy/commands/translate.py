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

from scenimefy.commands.options import add_config_option

HELP = "translate photos with a trained generator"


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
        "--batch-size", type=int, default=None, help="images per pass (default: the config's translate.batch_size)"
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="PX",
        help="downscale so the longer side is at most this many pixels, 0: keep (default: translate.max_side)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="PX",
        help="translate in overlapping tiles of this many pixels, 0: whole images (default: translate.tile)",
    )
    p.add_argument(
        "--memory-budget-gib",
        type=float,
        default=None,
        metavar="GIB",
        help="memory one pass may use, in GiB; larger images are tiled (default: translate.memory_budget_gib, "
        "0: 70%% of the free memory)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="(default: translate.device, auto)")
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
    add_config_option(p, " whose translate section gives the defaults")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="translate.key=value",
        help="config override (repeatable), e.g. --set translate.tile_overlap=64",
    )
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The options that stand for config keys, applied after --set so the option wins."""
    keys = {"backend": "translate.backend", "video_smoothing": "translate.video_smoothing"}
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
        )
    videos = translate_videos(
        generator,
        args.inputs,
        args.out,
        batch_size=batch_size,
        max_side=max_side,
        smoothing=tr.video_smoothing,
        device=device,
        memory_budget_gib=memory_budget_gib,
    )
    tiled = f" ({len(report.auto_tiled)} in tiles to fit memory)" if report.auto_tiled else ""
    frames = sum(v.frames for v in videos.written)
    seconds = sum(v.seconds for v in videos.written)
    rate = f", {frames / seconds:.1f} frames/s" if seconds > 0 else ""
    print(
        f"translated {len(report.written)} image(s){tiled} and {len(videos.written)} video(s) "
        f"({frames} frames{rate}) into {args.out}; skipped {len(report.skipped) + len(videos.skipped)}"
    )
    for path, reason in [*report.skipped, *videos.skipped]:
        print(f"  skipped {path}: {reason}")
    return 0 if report.written or videos.written else 1
