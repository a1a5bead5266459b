"""Serve a trained translator: a web page and an HTTP API on Ray Serve, with dynamic batching.

    scenimefy serve --checkpoint runs/scenimefy-paper/generator.pt            # http://127.0.0.1:8000/
    scenimefy serve --checkpoint G.pt --host 0.0.0.0 --port 8080 --replicas 2 --device cuda
    scenimefy serve --checkpoint /shared/G.pt --autoscale 1:4 --address auto  # on a node of a running cluster
    scenimefy serve --checkpoint G.pt --set serve.max_batch_size=16 --set serve.max_upload_mib=50

API: POST /v1/translate (image bytes or multipart field `image`; ?max_side=&format=png|jpeg|webp),
GET /v1/model, GET /healthz. Options left unset take the config's `serve` section. Runs until
Ctrl-C, then shuts the application down.
"""

from __future__ import annotations

import argparse

from scenimefy.commands.options import add_config_option, add_set_option

HELP = "serve a translator: web page + HTTP API on Ray Serve"


def _autoscale(text: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN:MAX replicas, e.g. 1:4") from None
    if not 0 <= low <= high or high < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= MIN <= MAX and MAX >= 1")
    return low, high


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="our generator.pt / checkpoint dir, or Shinkai_net_G.pth")
    p.add_argument("--host", default=None, help="address to bind (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: serve.port, 8000)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=None, metavar="N", help="translator replicas (default: 1)")
    scale.add_argument(
        "--autoscale",
        type=_autoscale,
        default=None,
        metavar="MIN:MAX",
        help="autoscale translator replicas between MIN and MAX (default: off, fixed replicas)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="(default: serve.device, auto)")
    p.add_argument(
        "--address",
        default=None,
        help="join this running Ray cluster (auto: the one this node belongs to); default: local",
    )
    add_config_option(p, " whose serve section gives the defaults")
    add_set_option(p, "serve", "serve.max_batch_size=16")
    p.set_defaults(func=run)


def settings(args: argparse.Namespace):
    """The `serve` section: the config's, then --set, then the explicit options."""
    from scenimefy.config import load_config

    overrides = list(args.overrides)
    if args.host is not None:
        overrides.append(f"serve.host={args.host}")
    if args.port is not None:
        overrides.append(f"serve.port={args.port}")
    if args.replicas is not None:
        if args.replicas < 1:
            raise ValueError(f"--replicas {args.replicas}: expected >= 1 (or --autoscale MIN:MAX)")
        overrides.append(f"serve.replicas={args.replicas}")
    if args.autoscale is not None:
        overrides += ["serve.replicas=0", f"serve.min_replicas={args.autoscale[0]}"]
        overrides.append(f"serve.max_replicas={args.autoscale[1]}")
    if args.device is not None:
        overrides.append(f"serve.device={args.device}")
    from scenimefy.serve.app import serve_config

    return serve_config(base=load_config(args.config, overrides).serve)


def run(args: argparse.Namespace) -> int:
    """Start the application, print its URL, serve until Ctrl-C or SIGTERM, then shut it down."""
    import signal
    import threading

    cfg = settings(args)
    from scenimefy.serve.app import start, stop

    url = start(args.checkpoint, cfg, address=args.address)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"scenimefy is serving {args.checkpoint} at {url}  (API: {url}v1/translate; Ctrl-C stops it)", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        stop()
    print("scenimefy serve: stopped", flush=True)
    return 0
