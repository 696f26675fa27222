#!/usr/bin/env bash
# The one prepared device run of issue 8: generation then training benchmarks on one H100/H200, ~5 min.
#
# On the device machine (repo root, wheels in .whl/ carried along; results and the log land in $OUT):
#     bash benchmarks/gpu_check.sh
# Here, as a dry run of the same path with a tiny model on the CPU (results in a temp dir unless OUT is set):
#     PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --tiny
#
# The GPU machine has torch and transformers but no DeepSpeed and no network: DeepSpeed and the dependencies it
# lacks there travel as wheels (.whl/, see benchmarks/README.md) and are installed into $SITE. Every stage has
# its own timeout, so one that hangs cannot eat the others' time; the whole script stays under ~8 minutes.
set -uo pipefail

TINY=""
[[ "${1:-}" == "--tiny" ]] && TINY="--tiny"
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
GEN_TIMEOUT_S=${GEN_TIMEOUT_S:-120}
TRAIN_TIMEOUT_S=${TRAIN_TIMEOUT_S:-360}
export OUT=${OUT:-$(mktemp -d /tmp/gpu-check-XXXXXX)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

main() {
    local start=$SECONDS
    echo "== $(date -u +%FT%TZ) gpu_check ${TINY:-(full)}; results in $OUT"
    if compgen -G ".whl/*.whl" >/dev/null; then
        # A dry run checks that the wheels install for the device's Python 3.12 but runs on the local packages.
        local for_device=()
        [[ -n $TINY ]] && for_device=(--python-version 3.12 --implementation cp --only-binary=:all:
                                      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "${for_device[@]}" .whl/*.whl || { echo "wheel install failed"; return 1; }
        echo "installed $(ls .whl | wc -l) wheels into $SITE"
        if [[ -n $TINY ]]; then export PYTHONPATH="$PWD/src"; else export PYTHONPATH="$SITE:$PWD/src"; fi
    else
        echo "no .whl/ folder: using the installed packages"
        export PYTHONPATH="$PWD/src"
    fi
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm \
        --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'deepspeed', deepspeed.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1

    echo "== generation ($(( SECONDS - start )) s so far; limit ${GEN_TIMEOUT_S} s)"
    timeout -k 10 "$GEN_TIMEOUT_S" "$PY" benchmarks/bench_generate.py --gpu $TINY
    local gen=$?
    echo "== training ($(( SECONDS - start )) s so far; limit ${TRAIN_TIMEOUT_S} s)"
    # expandable segments: less fragmentation for the large training allocations (not for CUDA graphs above);
    # TORCH_LOGS=recompiles names any guard that makes torch.compile recompile inside the timed steps
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCH_LOGS=recompiles timeout -k 10 "$TRAIN_TIMEOUT_S" \
        "$PY" benchmarks/bench_train.py --gpu $TINY --profile-steps 2 \
        --budget-s $(( TRAIN_TIMEOUT_S - 20 ))
    local train=$?
    nvidia-smi --query-gpu=name,memory.used,clocks.sm,temperature.gpu --format=csv 2>/dev/null
    echo "== done in $(( SECONDS - start )) s: generation exit $gen, training exit $train"
    summary
    [[ $gen -eq 0 && $train -eq 0 ]]
}

summary() {
    "$PY" - <<'EOF'
import json, os, pathlib
out = pathlib.Path(os.environ["OUT"])
for name in ("gpu_generate.json", "gpu_train.json"):
    path = out / name
    if not path.exists():
        print(f"{name}: missing")
        continue
    report = json.loads(path.read_text())
    print(f"{name}: {report['machine'].get('device')} {report['machine'].get('versions')}")
    for row in report.get("batches", []):
        keys = [k for k in row if k.startswith("ours") and k.endswith(("_vs_hf_static", "_vs_hf_dynamic"))]
        speeds = [f"{m} {row[m]['new_tokens_per_s']:,.0f} tok/s" if "error" not in row[m] else f"{m} FAILED"
                  for m in ("hf_dynamic", "hf_static", "ours_eager", "ours") if m in row]
        print(f"  batch {row['batch']}: " + ", ".join(speeds) + "; "
              + ", ".join(f"{k}={row[k]['identical']}" for k in keys)
              + f"; speedup vs hf_dynamic {row.get('speedup_vs_hf_dynamic', 0):.1f}x")
    for row in report.get("variants", []):
        if row.get("status") == "ok":
            print(f"  {row['variant']}: micro {row['micro_batch']}, {row['tokens_per_s']:,.0f} tok/s, "
                  f"MFU {row['mfu']:.3f} (reference convention {row['mfu_reference_convention']:.3f}), "
                  f"peak {row.get('peak_memory_gib', 0):.1f} GiB")
        else:
            print(f"  {row['variant']}: {row['status']}")
    if "identity_fp32" in report:
        print("  identity in fp32 (ours vs HF generate):", json.dumps(report["identity_fp32"]))
    if "ratios" in report:
        print("  ratios:", json.dumps(report["ratios"]))
EOF
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
