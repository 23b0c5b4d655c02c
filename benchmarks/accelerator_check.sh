#!/usr/bin/env bash
# One-GPU check of the image-scale GAN steps (benchmarks/image_speed.py: SNGAN ResNet 32×32, DCGAN 64×64 at the
# configs' widths) at float32 and bfloat16: generator steps/s of gan_jax's engine, and against PyTorch CUDA eager
# when torch with CUDA is installed, with XLA's memory of each compiled step. Under 8 minutes; needs no network
# (jax with CUDA, and optionally torch with CUDA, must already be installed). Run from the repository root:
#
#     bash benchmarks/accelerator_check.sh [OUT_DIR]    # OUT_DIR: $1, else $OUT, else results/
#
# Writes OUT_DIR/accelerator_check.md (machine, versions, both dtypes' tables) and the per-dtype reports
# OUT_DIR/image_speed_float32.md, OUT_DIR/image_speed_bfloat16.md. Exit status: 0 when both runs finished, 1 when
# one failed or ran out of time (the report says which), 2 when JAX has no GPU. PYTHON picks the interpreter
# (default: python); RUN_TIMEOUT_S bounds each image_speed.py run (default 180 s).
set -uo pipefail

PY=${PYTHON:-python}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-180}
OUT_DIR=${1:-${OUT:-results}}
REPORT="$OUT_DIR/accelerator_check.md"

backend=$(timeout 45 "$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null | tail -1)
if [ "$backend" != "gpu" ]; then
    echo "accelerator_check: JAX has no GPU backend here (jax.default_backend() = ${backend:-failed to import});" \
         "install jax with CUDA support (pip install -U 'jax[cuda12]') and rerun" >&2
    exit 2
fi

mkdir -p "$OUT_DIR"
started=$SECONDS
{
    echo "# Accelerator check (benchmarks/accelerator_check.sh)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bash benchmarks/accelerator_check.sh $*\`"
    echo
    echo '```'
    if command -v nvidia-smi > /dev/null; then
        timeout 15 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
    timeout 45 "$PY" - <<'EOF' 2>&1
import importlib.util
import platform

import jax

print(f"python {platform.python_version()}, jax {jax.__version__}, devices: {jax.devices()}")
if importlib.util.find_spec("torch") is None:
    print("torch: not installed (the PyTorch columns are skipped)")
else:
    import torch

    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {cuda}"
          + (f", device: {torch.cuda.get_device_name()}" if cuda else " (the PyTorch columns are skipped)"))
EOF
    echo '```'
} > "$REPORT"
cat "$REPORT"

status=0
for dtype in float32 bfloat16; do
    out="$OUT_DIR/image_speed_$dtype.md"
    rm -f "$out"
    echo "== image_speed.py --dtype $dtype (time box ${RUN_TIMEOUT_S} s)" >&2
    timeout "$RUN_TIMEOUT_S" "$PY" benchmarks/image_speed.py --dtype "$dtype" --repeats 3 --block_s 1 \
        --skip_compile --out "$out"
    rc=$?
    echo >> "$REPORT"
    if [ "$rc" -ne 0 ]; then
        status=1
        reason="exit status $rc"
        [ "$rc" -eq 124 ] && reason="stopped after ${RUN_TIMEOUT_S} s"
        echo "## image_speed.py --dtype $dtype did not finish ($reason): below, the steps it finished, if any" \
            >> "$REPORT"
    fi
    if [ -s "$out" ]; then
        sed 's/^#/##/' "$out" >> "$REPORT"  # its sections one level down
    fi
done
echo >> "$REPORT"
echo "Total time: $((SECONDS - started)) s." >> "$REPORT"
echo "wrote $REPORT" >&2
exit "$status"
