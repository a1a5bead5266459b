"""Load-test `scenimefy serve` and compare it with `scenimefy translate` on the same images.

N concurrent loopback clients send photos to POST /v1/translate for a bounded time; every
response is checked once the window is over (status, size, and pixels within 1 level of the
offline translation of the same image), and throughput, p50/p95/p99 latency, the batch sizes
the server formed (X-Batch-Size), errors and the CPU time per request of each process (the
Serve proxy, the ingress, the translator replica, the clients; from /proc) are reported. The
offline baseline is `translate_paths`, the engine of `scenimefy translate`, on the same files
with the same torch threads, repeated for as long as a load window (so both see the machine's
load alike). Examples:

    python jobs/benchmark_serve.py --photos ../shared/data/photos --clients 8 --seconds 30
    python jobs/benchmark_serve.py --checkpoint runs/x/generator.pt --batch-sizes 1,8 --size 512
    python jobs/benchmark_serve.py --url http://127.0.0.1:8000/ --checkpoint G.pt --clients 32  # a running service

Without --url it starts a local Ray with one application per --batch-sizes value, each a
translator replica of `--cpus` CPUs (the offline run's torch threads), and alternates the offline
run and the services for --rounds rounds, so a machine whose load changes hits every mode alike;
the table shows medians over the rounds. Without
--checkpoint it uses a random generator of the paper's architecture (--arch). Prints one JSON
line per measurement (and appends them to --json-out) and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jobs.benchmarking import append_json_lines, machine_header
from scenimefy.data.decode import list_image_files, load_image
from scenimefy.data.images import from_uint8, to_uint8
from scenimefy.inference.translate import (
    load_translator,
    save_translator_snapshot,
    translate_batch,
    translate_paths,
)
from scenimefy.models.translator import ResnetGenerator


def prepare_images(photos: str, size: int, count: int, out_dir: Path) -> list[Path]:
    """`count` PNGs of size x size (centre crops of the photos, cycled), so every request shares one
    padded size and can batch with every other (the case dynamic batching is for)."""
    sources = list_image_files(photos)
    if not sources:
        raise ValueError(f"--photos {photos}: no images found")
    paths = []
    for i in range(count):
        img = load_image(sources[i % len(sources)])
        w, h = img.size
        s = min(w, h)
        crop = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        crop = crop.resize((size, size), Image.BICUBIC)
        if i >= len(sources):  # a different picture each time the photos repeat
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT if i // len(sources) % 2 else Image.FLIP_TOP_BOTTOM)
        path = out_dir / f"img_{i:03d}.png"
        crop.save(path)
        paths.append(path)
    return paths


def offline(
    checkpoint: str, paths: list[Path], batch_size: int, out_dir: Path, device: str = "cpu", seconds: float = 0.0
) -> dict:
    """img/s of `scenimefy translate`'s engine on the files (decode, translate, write PNG), repeated
    over the files for at least `seconds`, so it sees the machine's load over as long a window as
    a served run does."""
    generator = load_translator(checkpoint, device)
    translate_paths(generator, paths[:batch_size], out_dir / "warmup", batch_size=batch_size, max_side=0, tile=0,
                    tile_overlap=0, device=device, progress=False)  # fmt: skip
    started = time.perf_counter()
    done = passes = 0
    while passes == 0 or time.perf_counter() - started < seconds:
        report = translate_paths(generator, paths, out_dir / f"offline_b{batch_size}_{passes}", batch_size=batch_size,
                                 max_side=0, tile=0, tile_overlap=0, device=device, progress=False)  # fmt: skip
        assert len(report.written) == len(paths), report.skipped
        done += len(paths)
        passes += 1
    elapsed = time.perf_counter() - started
    return {"mode": "offline translate", "batch_size": batch_size, "images": done, "seconds": elapsed,
            "throughput_img_s": done / elapsed, "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of this machine's processes by role: the Serve proxy, each
    application's ingress and translator replicas (`<app>:Api`, `<app>:Translator`) and this
    process (the load-generating clients). Linux only (/proc); empty elsewhere."""
    roles: dict[str, float] = {}
    if not os.path.isdir("/proc"):
        return roles
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == os.getpid():
            role = "clients"
        elif "ProxyActor" in cmd:
            role = "proxy"
        elif "ServeReplica:" in cmd:
            role = cmd.split("ServeReplica:", 1)[1].split()[0]
        else:
            continue
        roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return roles


def load(url: str, bodies: list[bytes], expected: list[np.ndarray] | None, clients: int, seconds: float) -> dict:
    """Drive the service from `clients` threads for `seconds`; check every response afterwards.

    The clients only send and read during the window; the answers are decoded and compared with
    `expected` once the window is over, so the checking (PNG decoding, a pixel comparison) does
    not take cores from the service being measured."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/") + "/v1/translate"
    stop_at = time.perf_counter() + seconds
    answers: list[tuple[int, float, int, bytes, int]] = []  # (index, seconds, status, body, batch size)
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        i = k
        while time.perf_counter() < stop_at:
            index = i % len(bodies)
            i += clients
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=bodies[index], headers={"Content-Type": "image/png"})
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors[f"connection: {type(e).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
                continue
            dt = time.perf_counter() - t0
            with lock:
                answers.append((index, dt, r.status, body, int(r.getheader("X-Batch-Size", "0"))))
        conn.close()

    cpu_before = process_cpu_seconds()
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started  # includes the requests in flight at the deadline
    cpu_after = process_cpu_seconds()
    app = parts.path.strip("/")
    cpu_ms = {}
    for role, total in cpu_after.items():
        if role in ("proxy", "clients") or role.startswith(f"{app}:"):
            cpu_ms[role.removeprefix(f"{app}:")] = round(
                1000 * (total - cpu_before.get(role, 0.0)) / max(1, len(answers)), 2
            )
    latencies: list[float] = []
    batches: Counter[int] = Counter()
    for index, dt, status, body, batch in answers:
        problem = None
        if status != 200:
            problem = f"HTTP {status}"
        else:
            out = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
            want = expected[index] if expected is not None else None
            if want is not None and out.shape != want.shape:
                problem = "wrong size"
            elif want is not None and np.abs(out.astype(int) - want.astype(int)).max() > 1:
                problem = "wrong pixels"
        if problem:
            errors[problem] += 1
        else:
            latencies.append(dt)
            batches[batch] += 1
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "clients": clients,
        "seconds": elapsed,
        "ok": len(latencies),
        "errors": dict(errors),
        "throughput_img_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "batch_sizes": {str(k): v for k, v in sorted(batches.items())},
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpu_ms_per_request": cpu_ms,  # CPU time per answer by process (Linux)
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"))
    p.add_argument("--checkpoint", default="", help="generator to serve (default: random, --arch)")
    p.add_argument("--arch", default="64,9", help="ngf,n_blocks of the random generator (default: the paper's)")
    p.add_argument("--url", default="", help="drive this running service instead of starting one")
    p.add_argument("--size", type=int, default=256, help="side of the square test images, px")
    p.add_argument("--images", type=int, default=32, help="distinct images (and the offline run's count)")
    p.add_argument("--clients", type=int, default=8, help="concurrent loopback clients")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each load run")
    p.add_argument("--batch-sizes", default="1,8", help="serve.max_batch_size values to measure, in turn")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (offline, each service), alternated")
    p.add_argument("--batch-wait-s", type=float, default=0.02, help="serve.batch_wait_timeout_s")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs (torch threads) of the replica")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="of the offline path and the replicas")
    p.add_argument("--json-out", default="", help="append the JSON lines to this file")
    args = p.parse_args(argv)

    torch.set_num_threads(args.cpus)
    rows = [machine_header(torch.device(args.device), bench="serve")]
    print(json.dumps(rows[0]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint
        if not checkpoint:
            ngf, n_blocks = (int(v) for v in args.arch.split(","))
            torch.manual_seed(0)
            checkpoint = save_translator_snapshot(work / "generator.pt", ResnetGenerator(ngf=ngf, n_blocks=n_blocks),
                                                  {"run": {"name": "benchmark"}})  # fmt: skip
        paths = prepare_images(args.photos, args.size, args.images, work)
        bodies = [path.read_bytes() for path in paths]
        g = load_translator(checkpoint, "cpu")
        expected = [to_uint8(translate_batch(g, [from_uint8(np.asarray(load_image(x)))[0]])[0]) for x in paths]
        del g

        def emit(row: dict) -> None:  # noqa: B023
            rows.append(row)
            print(json.dumps(row), flush=True)

        sizes = [int(v) for v in args.batch_sizes.split(",")]
        if args.url:
            for r in range(args.rounds):
                for b in sizes:
                    emit({"round": r, **offline(checkpoint, paths, b, work, args.device, args.seconds)})
                emit({"round": r, "mode": "serve (running)", **load(args.url, bodies, expected, args.clients,
                                                                    args.seconds)})  # fmt: skip
        else:
            import ray
            from ray import serve

            from scenimefy.serve.app import build, serve_config

            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            # Ray starts its workers at niceness 15; on a machine shared with other jobs the replicas
            # would then get a fraction of the CPU share of the offline path (niceness 0) they are
            # compared with. `scenimefy serve` starts its local Ray the same way (serve/app.py).
            os.environ.setdefault("RAY_worker_niceness", "0")
            # One application per batch size, each with a replica of --cpus CPUs; only the one under
            # load computes, so they share the same cores in turn.
            ray.init(address="local", num_cpus=args.cpus * len(sizes), include_dashboard=False, log_to_driver=False)
            base = {
                "device": args.device,
                "precision": "fp32",  # answers are checked against the fp32 translation
                "cpus_per_replica": args.cpus,
                "batch_wait_timeout_s": args.batch_wait_s,
                "max_ongoing_requests": max(16, 2 * args.clients),
                "max_queued_requests": 4 * args.clients,
            }
            port = 8000 + os.getpid() % 1000
            try:
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                for b in sizes:
                    app = build(checkpoint, serve_config({**base, "max_batch_size": b}))
                    serve.run(app, name=f"b{b}", route_prefix=f"/b{b}")
                    url = f"http://127.0.0.1:{port}/b{b}/"
                    load(url, bodies[: args.clients], expected[: args.clients], args.clients, 3.0)  # warm-up
                # Rounds alternate the offline path and each service, so a change in the machine's
                # load hits every mode alike; the table shows medians over the rounds.
                for r in range(args.rounds):
                    for b in sizes:
                        emit({"round": r, **offline(checkpoint, paths, b, work, args.device, args.seconds)})
                    for b in sizes:
                        url = f"http://127.0.0.1:{port}/b{b}/"
                        row = load(url, bodies, expected, args.clients, args.seconds)
                        emit({"round": r, "mode": "serve", "max_batch_size": b, **row})
            finally:
                serve.shutdown()
                ray.shutdown()
    append_json_lines(args.json_out, rows)

    print(f"\nmedians over {args.rounds} round(s) (min-max):")
    loads = [r["load_avg_1m"] for r in rows[1:] if "load_avg_1m" in r]
    if loads:
        print(
            f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f} (median {np.median(loads):.1f})"
        )
    print("| mode | batch | clients | img/s | p50 ms | p95 ms | p99 ms | batch sizes formed | checked | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows[1:]:
        groups.setdefault((r["mode"], r.get("batch_size", r.get("max_batch_size", 0))), []).append(r)
    for (mode, batch), group in groups.items():

        def med(key: str, fmt: str = ".0f", group=group) -> str:
            values = [g[key] for g in group]
            return f"{np.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

        if mode.startswith("offline"):
            done = sum(g["images"] for g in group)
            print(f"| {mode} | {batch} | | {med('throughput_img_s', '.2f')} | | | | | {done} | |")
            continue
        formed: Counter[str] = Counter()
        for g in group:
            formed.update(g["batch_sizes"])
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(formed.items(), key=lambda kv: int(kv[0])))
        ok, errors = sum(g["ok"] for g in group), sum(sum(g["errors"].values()) for g in group)
        print(f"| {mode} | {batch} | {group[0]['clients']} | {med('throughput_img_s', '.2f')} | {med('p50_ms')} | "
              f"{med('p95_ms')} | {med('p99_ms')} | {shown} | {ok + errors} | {errors} |")  # fmt: skip
    cpu_rows = [r for r in rows[1:] if r.get("cpu_ms_per_request")]
    if cpu_rows:
        print("\nCPU ms per answered request, by process (medians over the rounds):")
        for batch in sorted({r.get("max_batch_size", 0) for r in cpu_rows}):
            group = [r["cpu_ms_per_request"] for r in cpu_rows if r.get("max_batch_size", 0) == batch]
            names = sorted({k for g in group for k in g})
            shown = ", ".join(f"{k} {np.median([g.get(k, 0.0) for g in group]):.1f}" for k in names)
            print(f"- batch {batch}: {shown}")
    failed = any(r.get("errors") for r in rows[1:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
