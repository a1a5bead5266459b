"""Pretrained priors (CLIP, LPIPS-VGG, Mask2Former, FID Inception) for air-gapped clusters.

scenimefy weights download --to /shared/priors
# then run with priors.cache_dir=/shared/priors priors.offline=true
"""

from __future__ import annotations

import argparse

from scenimefy.commands.options import add_config_option, add_overrides

HELP = "pretrained priors (CLIP, LPIPS-VGG, Mask2Former, FID Inception): download for air-gapped clusters"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="weights_command", required=True, title="commands", metavar="download")
    d = sub.add_parser(
        "download", help="fetch every prior into DIR", description="Fetch every prior into DIR for air-gapped clusters."
    )
    d.add_argument("--to", required=True, metavar="DIR", help="target directory (then set priors.cache_dir=DIR)")
    add_config_option(d, " whose priors section names the models")
    add_overrides(d, "priors.clip_model=ViT-B-16 priors.clip_pretrained=openai", metavar="priors.key=value")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scenimefy.config import load_config
    from scenimefy.priors.loading import download_weights

    cfg = load_config(args.config, args.overrides)
    for path in download_weights(cfg.priors, args.to):
        print(path)
    print(f"priors are in {args.to}: set priors.cache_dir={args.to} (and priors.offline=true on air-gapped machines)")
    return 0
