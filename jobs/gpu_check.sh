#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md asks for, in one call of about 9 minutes on one lent GPU
# (the device machine's python3 has torch, numpy, pillow, pyyaml, tqdm and transformers;
# neither script below needs Ray, MLflow, open_clip or lpips):
#   1. the machine's ceilings: a large bf16 matrix product and a device-to-device copy;
#   2. the translator's training step, bf16, 256 px, batch 1/8/16 eager, then batch 32 with
#      torch.compile (and with channels_last inputs), each profiled: time per kind of kernel
#      and the share of wall time the GPU is busy;
#   3. stage 2's pairs (paper StyleGAN2 + a random Swin-B Mask2Former), serial vs batched.
# Each part has its own time limit, so a slow compile cannot eat the rest. Everything lands in
# $OUT/gpu_check.tgz (raw JSON lines + kernel tables) and the summary table is printed last.
#
#   bash jobs/gpu_check.sh            # on the GPU machine, from the repository root
set -uo pipefail
out_dir=${OUT:-benchmarks/gpu}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
trap 'mkdir -p "$out_dir"; tar czf "$out_dir/gpu_check.tgz" -C "$work" .' EXIT

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$work/nvidia-smi.txt"

timeout 60 python3 - <<'EOF' | tee "$work/ceilings.txt"
import torch
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    a @ b; y.copy_(x)
def time_ms(fn, n=10):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / n
mm = time_ms(lambda: a @ b)
cp = time_ms(lambda: y.copy_(x))
print(f"ceilings: bf16 matmul {2 * 8192**3 / mm / 1e9:.0f} TFLOP/s, copy {2 * 2**30 / cp / 1e9:.0f} GB/s (read + write)")
EOF

bench() {  # limit_s, then benchmark_translator.py arguments
    local limit=$1; shift
    timeout "$limit" python3 jobs/benchmark_translator.py --device cuda --size 256 --precision bf16 \
        --profile "$work" --json-out "$work/translator.jsonl" "$@" \
        || echo "benchmark_translator $* stopped (exit $?)"
}
bench 150 --batch 1 8 16 --steps 8 --warmup 3  # and G's inference img/s at each batch
bench 240 --batch 32 --compile --steps 6 --warmup 3 --skip-inference
bench 150 --batch 32 --compile --channels-last --steps 6 --warmup 3 --skip-inference

timeout 150 python3 jobs/benchmark_pairs.py --device cuda --generator paper --random-mask2former swin-base \
    --n 256 --serial-n 64 --batch 32 --precision bf16 --repeats 2 --no-ray --json-out "$work/pairs.jsonl" \
    || echo "benchmark_pairs stopped (exit $?)"

python3 - "$work" <<'EOF'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
peak = 989.0  # TFLOP/s, dense bf16 of an H100/H200 SXM (the datasheet's; ceilings.txt has the measured one)
print("\n| batch | compile | channels_last | s/step | img/s | TFLOP/s | % of peak | GPU busy | top kinds (s) |")
print("|---|---|---|---|---|---|---|---|---|")
flops_per_image = None
rows = [json.loads(l) for l in (work / "translator.jsonl").read_text().splitlines() if '"train_step"' in l] if (work / "translator.jsonl").exists() else []
for r in rows:
    if r["tflop_per_step"] == r["tflop_per_step"]:  # not NaN: eager rows count their FLOPs
        flops_per_image = r["tflop_per_step"] / r["batch"]
for r in rows:
    tflop = flops_per_image * r["batch"] if flops_per_image else float("nan")
    achieved = tflop / r["sec_per_step_median"]
    kinds = ", ".join(f"{k} {v}" for k, v in list(r.get("profile_seconds_by_kind", {}).items())[:3])
    print(f"| {r['batch']} | {r['compile']} | {r['channels_last']} | {r['sec_per_step_median']} | {r['img_per_s']} | "
          f"{achieved:.1f} | {100 * achieved / peak:.1f} % | {r.get('profile_busy_fraction')} | {kinds} |")
for l in (work / "pairs.jsonl").read_text().splitlines() if (work / "pairs.jsonl").exists() else []:
    r = json.loads(l)
    if "pairs_per_s" in r:
        print("pairs:", {k: r[k] for k in r if k in ("mode", "batch", "pairs_per_s", "speedup_vs_serial")})
EOF
