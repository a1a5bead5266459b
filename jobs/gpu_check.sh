#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md asks for, in one call of at most ~9.5 minutes on one lent GPU
# (the device machine's python3 has torch, numpy, pillow, pyyaml, tqdm and transformers;
# nothing below needs Ray, MLflow, open_clip or lpips). Parts, in order:
#   ceilings    a large bf16 matrix product and a device-to-device copy (the machine's ceilings)
#   eager       the translator's training step, bf16, 256 px, batch 1/8/16, and G's inference
#   compiled    the same step at batch 32 with torch.compile
#   compiled_cl ... and with channels_last inputs
#   resampling  G's blur down/upsampling: depthwise convolutions vs pointwise forms (eager, compiled)
#   pairs       stage 2: paper StyleGAN2 + a random Swin-B Mask2Former, serial vs batched
#   cudagraphs  (only when named) batch 1 and 8 compiled with mode reduce-overhead (CUDA graphs)
# The training steps are profiled (time per kind of kernel, share of wall time the GPU is
# busy). Each part has its own time limit, so a slow compile cannot eat the rest. Everything
# lands in $OUT/gpu_check.tgz; a summary table is printed last.
#
#   bash jobs/gpu_check.sh                      # every part, from the repository root
#   bash jobs/gpu_check.sh compiled resampling  # some parts
set -uo pipefail
out_dir=${OUT:-benchmarks/gpu}
work=$(mktemp -d)
parts=" ${*:-ceilings eager compiled compiled_cl resampling pairs} "
want() { [[ "$parts" == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
trap 'mkdir -p "$out_dir"; tar czf "$out_dir/gpu_check.tgz" -C "$work" .' EXIT

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$work/nvidia-smi.txt"

if want ceilings; then
    timeout 60 python3 - <<'PY' | tee "$work/ceilings.txt"
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
PY
fi

bench() {  # limit_s, then benchmark_translator.py arguments
    local limit=$1; shift
    timeout "$limit" python3 jobs/benchmark_translator.py --device cuda --size 256 --precision bf16 \
        --profile "$work" --json-out "$work/translator.jsonl" "$@" \
        || echo "benchmark_translator $* stopped (exit $?)"
}
want eager && bench 110 --batch 1 8 16 --steps 8 --warmup 3  # and G's inference img/s at each batch
want compiled && bench 200 --batch 32 --compile --steps 6 --warmup 3 --skip-inference
want compiled_cl && bench 100 --batch 32 --compile --channels-last --steps 6 --warmup 3 --skip-inference
want cudagraphs && bench 300 --batch 1 8 --compile --compile-mode reduce-overhead --steps 8 --warmup 3 --skip-inference
if want resampling; then
    for flags in "" "--compile"; do
        timeout 40 python3 jobs/benchmark_resampling.py --device cuda --batch 32 --dtype bf16 $flags \
            --json-out "$work/resampling.jsonl" >/dev/null || echo "benchmark_resampling $flags stopped (exit $?)"
    done
fi
if want pairs; then
    timeout 90 python3 jobs/benchmark_pairs.py --device cuda --generator paper --random-mask2former swin-base \
        --n 256 --serial-n 64 --batch 32 --precision bf16 --repeats 2 --no-ray --json-out "$work/pairs.jsonl" \
        || echo "benchmark_pairs stopped (exit $?)"
fi

python3 - "$work" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
peak = 989.0  # TFLOP/s, dense bf16 of an H100/H200 SXM (the datasheet's; ceilings.txt has the measured one)

def rows(name, key):
    path = work / name
    return [r for r in map(json.loads, path.read_text().splitlines()) if key in r] if path.exists() else []

steps = [r for r in rows("translator.jsonl", "kind") if r["kind"] == "train_step"]
counted = [r for r in steps if r["tflop_per_step"] == r["tflop_per_step"]]  # eager rows count FLOPs (NaN compiled)
per_image = counted[0]["tflop_per_step"] / counted[0]["batch"] if counted else float("nan")
print("\n| batch | compile | channels_last | s/step | img/s | TFLOP/s | % of peak | GPU busy | top kinds (s) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in steps:
    achieved = per_image * r["batch"] / r["sec_per_step_median"]
    kinds = ", ".join(f"{k} {v}" for k, v in list(r.get("profile_seconds_by_kind", {}).items())[:3])
    print(f"| {r['batch']} | {r.get('compile_mode') or r['compile']} | {r['channels_last']} | {r['sec_per_step_median']} | {r['img_per_s']} | "
          f"{achieved:.1f} | {100 * achieved / peak:.1f} % | {r.get('profile_busy_fraction')} | {kinds} |")
for r in rows("translator.jsonl", "kind"):
    if r["kind"] == "inference":
        print(f"inference: batch {r['batch']}: {r['img_per_s']} img/s")
for r in rows("resampling.jsonl", "form"):
    print(f"resampling: {r['kind']} {r['channels']}ch {r['side']}px {r['form']:9s} compile={r['compile']}: {r['ms_fwd_bwd_median']} ms fwd+bwd")
for r in rows("pairs.jsonl", "mode"):
    print("pairs:", {k: r[k] for k in r if k in ("mode", "batch", "pairs_per_s", "speedup_vs_serial")})
PY
