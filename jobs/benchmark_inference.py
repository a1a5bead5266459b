"""Benchmark inference: PyTorch vs onnxruntime, and video flicker with and without smoothed statistics.

    python jobs/benchmark_inference.py --json-out benchmarks/inference_cpu_$(date +%F).jsonl
    python jobs/benchmark_inference.py --device cuda --sizes 256,1024,2048 --parts backends

Part `backends`: the paper's generator (ngf 64, 9 blocks, random weights: speed and memory do not
depend on them) translates one image at each size, with PyTorch and with its ONNX export in
onnxruntime (CPU provider, or CUDA's with --device cuda). Each (backend, size) runs in a fresh
process so its peak RSS is its own; on a GPU peak memory is the allocator's (PyTorch) and not
measured for onnxruntime. Reports img/s (median of the timed passes) and peak memory.

Part `video`: a clip panning and zooming across a real photo (`pan_zoom_clip`, known motion) is
translated per frame and with instance-norm statistics smoothed over time; reports the
motion-compensated warping error the translation adds to the source's, the consecutive-frame
flicker, and frames/s, plus one `translate_video` run (decode, translate, encode) for its frames/s.
`--checkpoint G.pt` measures that generator (a trained one: the figures that matter to a viewer);
without it the paper's architecture with random weights at Xavier gain 0.3 (not CUT's 0.02, under
which the output hardly depends on the input). The backends part always uses the random paper
generator (speed and memory do not depend on the weights).

    python jobs/benchmark_inference.py --parts video --checkpoint runs/x/generator.pt --frames 32

Prints one JSON line per measurement (--json-out FILE appends them to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jobs.benchmarking import append_json_lines, machine_header, median, timed  # noqa: E402
from scenimefy.data.images import from_uint8, to_uint8  # noqa: E402
from scenimefy.inference.translate import translate_batch  # noqa: E402
from scenimefy.models.translator import ResnetGenerator, init_weights  # noqa: E402

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "ag_1.jpg"


def paper_generator(gain: float = 0.02, seed: int = 0) -> ResnetGenerator:
    torch.manual_seed(seed)
    return init_weights(ResnetGenerator(ngf=64, n_blocks=9), gain=gain).eval()


def rss_mib() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would include the parent's peak, kept across exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_backend(backend: str, size: int, onnx_path: str, device: str, steps: int, threads: int) -> dict:
    """Runs in its own process: time `steps` passes of one (3, size, size) image."""
    from scenimefy.inference.backends import OnnxRuntimeGenerator

    dev = torch.device(device)
    torch.set_num_threads(threads)
    g = paper_generator().to(dev) if backend == "torch" else OnnxRuntimeGenerator(onnx_path, dev, threads=threads)
    x = (torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dev)
    before = rss_mib()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = timed(lambda i: translate_batch(g, [x]), dev, steps=steps, warmup=1)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" and backend == "torch" else rss_mib()
    return {
        "part": "backends",
        "backend": backend,
        "providers": getattr(g, "providers", None),
        "size": size,
        "steps": steps,
        "img_per_s": round(1 / median(times), 3),
        "sec_per_img_min": round(min(times), 3),
        "peak_mem_mib": round(peak, 1),
        "peak_mem_kind": "cuda allocator" if dev.type == "cuda" and backend == "torch" else "process peak RSS",
        "rss_before_first_pass_mib": round(before, 1),
    }


def backends_part(args) -> list[dict]:
    from scenimefy.inference.export import export_generator

    rows = []
    with tempfile.TemporaryDirectory() as d:
        onnx_path = os.path.join(d, "paper.onnx")
        report = export_generator(paper_generator(), onnx_path, fmt="onnx")
        rows.append({"part": "export", "format": "onnx", "bytes": report.bytes, "max_abs_diff": report.max_abs_diff})
        print(json.dumps(rows[-1]), flush=True)
        for size in args.sizes:
            steps = args.steps if size <= 512 else max(2, args.steps // 2)
            for backend in ("torch", "onnxruntime"):
                one = [sys.executable, __file__, "--one", f"{backend}:{size}", "--onnx", onnx_path]
                one += ["--device", args.device, "--steps", str(steps), "--threads", str(args.threads)]
                out = subprocess.run(one, capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def video_part(args) -> list[dict]:
    import time

    from PIL import Image

    from scenimefy.inference.video import flicker, pan_zoom_clip, translate_frames, translate_video, warping_error

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    frames, boxes = pan_zoom_clip(photo, args.frames, args.clip_width, args.clip_height)
    source_error = warping_error(frames, boxes)
    if args.checkpoint:
        from scenimefy.inference.translate import load_translator

        g = load_translator(args.checkpoint, dev)
    else:
        g = paper_generator(gain=0.3).to(dev)
    arch = dict(getattr(g, "arch", {}) or {"ngf": 64, "n_blocks": 9})
    weights = os.path.basename(args.checkpoint) if args.checkpoint else "random (Xavier gain 0.3)"
    xs = [from_uint8(f.copy())[0] for f in frames]
    rows = []
    for smoothing in args.smoothing:
        start = time.perf_counter()
        outs = [to_uint8(y) for y in translate_frames(g, xs, batch_size=args.batch, smoothing=smoothing)]
        seconds = time.perf_counter() - start
        rows.append(
            {
                "part": "video",
                "smoothing": smoothing,
                "frames": len(frames),
                "size": f"{args.clip_width}x{args.clip_height}",
                "batch": args.batch,
                "added_warping_error": round(warping_error(outs, boxes) - source_error, 4),
                "source_warping_error": round(source_error, 4),
                "flicker": round(flicker(outs, frames), 4),
                "frames_per_s": round(len(frames) / seconds, 3),
                "weights": weights,
                "arch": arch,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    import av

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "clip.mp4")
        with av.open(src, "w") as out:
            vs = out.add_stream("libx264", rate=24)
            vs.width, vs.height, vs.pix_fmt = args.clip_width, args.clip_height, "yuv420p"
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(f.copy(), format="rgb24")
                frame.pts = i
                for p in vs.encode(frame):
                    out.mux(p)
            for p in vs.encode():
                out.mux(p)
        report = translate_video(
            g, src, os.path.join(d, "out.mp4"), batch_size=args.batch, smoothing=0.8, device=dev, progress=False
        )
    rows.append(
        {
            "part": "video_file",
            "smoothing": 0.8,
            "frames": report.frames,
            "size": f"{report.width}x{report.height}",
            "frames_per_s": round(report.frames_per_second, 3),
            "weights": weights,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    )
    print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="backends,video", help="backends, video (comma-separated)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sizes", default="256,1024", help="square image sides for the backends part")
    p.add_argument("--steps", type=int, default=4, help="timed passes at <= 512 px (half above, at least 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and onnxruntime threads")
    p.add_argument("--checkpoint", default="", help="video part: this generator (default: random paper weights)")
    p.add_argument("--photo", default=str(PHOTO), help="the photo the video part pans across")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--clip-width", type=int, default=256)
    p.add_argument("--clip-height", type=int, default=160)
    p.add_argument("--batch", type=int, default=4, help="frames per pass in the video part")
    p.add_argument("--smoothing", default="0,0.8,0.95", help="video_smoothing values to compare")
    p.add_argument("--json-out", default="")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # backend:size, in a child process
    p.add_argument("--onnx", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        backend, size = args.one.split(":")
        print(json.dumps(one_backend(backend, int(size), args.onnx, args.device, args.steps, args.threads)))
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.smoothing = [float(s) for s in args.smoothing.split(",")]
    import onnxruntime

    header = machine_header(torch.device(args.device), onnxruntime=onnxruntime.__version__)
    print(json.dumps(header), flush=True)
    rows = [header]
    parts = args.parts.split(",")
    if "backends" in parts:
        rows += backends_part(args)
    if "video" in parts:
        rows += video_part(args)
    append_json_lines(args.json_out, rows)


if __name__ == "__main__":
    main()
