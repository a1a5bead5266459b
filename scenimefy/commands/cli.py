"""The `scenimefy` command: one subcommand per stage, plus demo and translate.

User errors (bad config keys, missing folders, wrong checkpoints) print one line and exit 2;
tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import sys

from scenimefy.config import Config, ConfigError, dump_yaml, load_config


def _add_config_args(p: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    p.add_argument("--config", default=default_preset, help="preset name (paper, rtx3090, tiny) or a YAML file")
    p.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. translator.lambda_src=0.1"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


# ----------------------------------------------------------------------------------------
# train


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.dry_run:
        from scenimefy.distributed.cluster import run_dir_of

        print(dump_yaml(cfg), end="")
        print(f"# run dir: {run_dir_of(cfg)}\n# world size: {cfg.run.num_workers}")
        return 0
    from scenimefy.distributed.translator import train_translator_on_ray

    outcome = train_translator_on_ray(cfg)
    print(f"generator: {outcome.generator}")
    print(f"checkpoint: {outcome.checkpoint}")
    print(f"mlflow: {outcome.tracking_uri} (run {outcome.mlflow_run_id})")
    return 0


# ----------------------------------------------------------------------------------------
# pretrain, finetune (stages 0 and 1)


def _stylegan_stage(args: argparse.Namespace, stage: str) -> int:
    cfg = _config(args)
    from scenimefy.distributed import stylegan

    if args.dry_run:
        info = stylegan.preflight(cfg, stage)  # resolves the data, batch and (finetune) source
        print(dump_yaml(cfg), end="")
        for key, value in info.items():
            print(f"# {key}: {value}")
        return 0
    run = stylegan.pretrain_on_ray if stage == stylegan.PRETRAIN else stylegan.finetune_on_ray
    outcome = run(cfg)
    print(f"snapshot: {outcome.snapshot}")
    print(f"checkpoint: {outcome.checkpoint}")
    print(f"mlflow: {outcome.tracking_uri} (run {outcome.mlflow_run_id})")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    return _stylegan_stage(args, "pretrain")


def cmd_finetune(args: argparse.Namespace) -> int:
    return _stylegan_stage(args, "finetune")


# ----------------------------------------------------------------------------------------
# weights


def cmd_weights_download(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from scenimefy.priors.loading import download_weights

    for path in download_weights(cfg.priors, args.to):
        print(path)
    print(f"priors are in {args.to}: set priors.cache_dir={args.to} (and priors.offline=true on air-gapped machines)")
    return 0


# ----------------------------------------------------------------------------------------
# translate


def cmd_translate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    tr = cfg.translate
    from scenimefy.inference.translate import load_translator, resolve_device, translate_paths

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
    tiled = f" ({len(report.auto_tiled)} in tiles to fit memory)" if report.auto_tiled else ""
    print(f"translated {len(report.written)} image(s) into {args.out}{tiled}; skipped {len(report.skipped)}")
    for path, reason in report.skipped:
        print(f"  skipped {path}: {reason}")
    return 0 if report.written else 1


# ----------------------------------------------------------------------------------------
# demo


def cmd_demo(args: argparse.Namespace) -> int:
    from scenimefy.demo.run import run_demo

    run_demo(out_dir=args.out, overrides=args.overrides, workers=args.workers)
    return 0


# ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenimefy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the photo->anime translator (stage 3) on Ray Train")
    _add_config_args(p, "paper")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="pretrain StyleGAN2 on real scene photos (stage 0, G_s) on Ray Train")
    _add_config_args(p, "paper")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune G_s into the anime generator G_t (stage 1) on Ray Train")
    _add_config_args(p, "paper")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("weights", help="pretrained priors (CLIP, LPIPS-VGG, Mask2Former, FID Inception)")
    weights = p.add_subparsers(dest="weights_command", required=True)
    p = weights.add_parser("download", help="fetch every prior into DIR for air-gapped clusters")
    p.add_argument("--to", required=True, metavar="DIR", help="target directory (then set priors.cache_dir=DIR)")
    p.add_argument("--config", default=None, help="preset or YAML whose priors section names the models")
    p.add_argument("overrides", nargs="*", metavar="priors.key=value")
    p.set_defaults(func=cmd_weights_download)

    p = sub.add_parser("translate", help="translate photos with a trained generator")
    p.add_argument("inputs", nargs="+", help="image files or folders (recursive)")
    p.add_argument("--checkpoint", required=True, help="our generator.pt / checkpoint dir, or Shinkai_net_G.pth")
    p.add_argument("--out", required=True, help="output folder (file names are kept, as PNG)")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is at most this")
    p.add_argument("--tile", type=int, default=None, help="translate in overlapping tiles of this size")
    p.add_argument(
        "--memory-budget-gib",
        type=float,
        default=None,
        help="memory one pass may use; larger images are tiled (default: 70%% of the free memory)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="translate.key=value")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("demo", help="end to end on procedural demo data, CPU, a few minutes")
    p.add_argument("--out", default="scenimefy-demo", help="where data, runs and pictures go")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    p.set_defaults(func=cmd_demo)
    # stage 2, the pipeline, evaluation, sweeps and the cluster front doors live beside their drivers
    from scenimefy.commands.cluster import add_cluster_commands
    from scenimefy.commands.evaluate import add_evaluate_commands
    from scenimefy.commands.pairs import add_pairs_commands
    from scenimefy.commands.pipeline import add_pipeline_commands
    from scenimefy.commands.tune import add_tune_commands

    for add in (
        add_pairs_commands,
        add_pipeline_commands,
        add_evaluate_commands,
        add_tune_commands,
        add_cluster_commands,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"scenimefy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scenimefy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
