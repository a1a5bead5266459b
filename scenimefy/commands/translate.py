"""Translate photos with a trained generator (ours, or the authors' Shinkai_net_G.pth).

    scenimefy translate --checkpoint runs/scenimefy-paper/generator.pt --out anime/ photos/ more.jpg
    scenimefy translate --checkpoint G.pt --out anime/ --max-side 1024 --set translate.tile_overlap=64 photos/

Options left unset take the config's `translate` section.
"""

from __future__ import annotations

import argparse
from typing import Any

from scenimefy.commands.options import add_config_option

HELP = "translate photos with a trained generator"


def _from_config(key: str, what: str = "") -> str:
    """`(default: translate.KEY of --config, V in the default preset)`: what an option left unset takes."""
    from scenimefy.config import TranslateConfig

    value = getattr(TranslateConfig(), key)
    shown = f"{value:g}" if isinstance(value, float) else value
    return f"(default: translate.{key} of --config; {shown}{what} unless the preset sets it)".replace("%", "%%")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files or folders (recursive)")
    p.add_argument("--checkpoint", required=True, help="our generator.pt / checkpoint dir, or Shinkai_net_G.pth")
    p.add_argument("--out", required=True, help="output folder (file names are kept, as PNG)")
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
    add_config_option(p, " whose translate section gives the defaults")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="translate.key=value",
        help="config override, repeatable, e.g. --set translate.tile_overlap=64 (in px) (default: none)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Translate; exit 1 when no image was written."""
    from scenimefy.config import load_config

    tr = load_config(args.config, args.overrides).translate
    from scenimefy.inference.translate import load_translator, translate_paths
    from scenimefy.stages.device import resolve_device

    device = resolve_device(args.device or tr.device)
    generator = load_translator(args.checkpoint, device)
    report = translate_paths(
        generator,
        args.inputs,
        args.out,
        batch_size=args.batch_size or tr.batch_size,
        max_side=args.max_side if args.max_side is not None else tr.max_side,
        tile=args.tile if args.tile is not None else tr.tile,
        tile_overlap=tr.tile_overlap,
        device=device,
        memory_budget_gib=args.memory_budget_gib if args.memory_budget_gib is not None else tr.memory_budget_gib,
    )
    for line in summary(report, args.out):
        print(line)
    return 0 if report.written else 1


def summary(report: Any, out: str) -> list[str]:
    """The lines after a translation: counts, and how each input whose name was taken was named.

    Skipped inputs are not repeated: each was reported on stderr as it was skipped.
    """
    skipped = f"; skipped {len(report.skipped)} input(s), listed above" if report.skipped else ""
    if not report.written:
        return [f"no image translated, nothing written{skipped}"]
    tiled = f" ({len(report.auto_tiled)} in tiles to fit memory)" if report.auto_tiled else ""
    lines = [f"translated {len(report.written)} image(s) into {out}{tiled}{skipped}"]
    if report.renamed:
        lines.append(f"{len(report.renamed)} input(s) share a name with an earlier one and were renamed:")
        lines += [f"  {src} -> {output}, since {first} has that name" for src, output, first in report.renamed]
    return lines
