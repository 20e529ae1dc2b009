#!/usr/bin/env bash
# Runs the Keras-backend training benchmark on a GPU node from a bundle: JAX, no Keras, no TensorFlow, no network.
#
#     tools/gpu_benchmark.sh BUNDLE_DIR OUT.json [extra flags]   # 16 rows; not yet timed on a GPU
#
# BUNDLE_DIR is what `python tools/build_backend_bundle.py --output=BUNDLE_DIR` wrote (Keras, its
# pure-Python dependencies and this package; the build copies this script into it too). The
# node needs only Python and JAX with its CUDA plugin. The script prints the GPU (nvidia-smi
# where present) and the devices JAX sees, then runs `python -m alexnet_tf.benchmark.keras_backend`
# with the bundle first on PYTHONPATH and KERAS_BACKEND=jax over both variants, both precisions
# and batches 128-1024 (one_weird_trick in bfloat16 first: the figure the project aims at), and
# writes its JSON to OUT.json, rewritten after every row, so a run cut short keeps its rows.
# It exits non-zero when anything fails, JAX finding no GPU included.
#
# Environment:
#   PYTHON              the interpreter with JAX (default: python3)
#   JAX_PLATFORMS       default cuda: a JAX that silently fell back to the CPU is a failure here;
#                       JAX_PLATFORMS=cpu runs it on a CPU (with small GPU_BENCHMARK_ARGS)
#   GPU_BENCHMARK_ARGS  replaces the sweep's flags (e.g. tiny settings for a CPU smoke run)
# Extra flags after OUT.json are added after those (e.g. --steps=50).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: tools/gpu_benchmark.sh BUNDLE_DIR OUT.json [extra benchmark flags]" >&2
  exit 2
fi
bundle=$1
out=$2
shift 2
if [[ ! -f $bundle/alexnet_tf/benchmark/keras_backend.py ]]; then
  echo "gpu_benchmark.sh: BUNDLE_DIR=$bundle holds no alexnet_tf package; build it with tools/build_backend_bundle.py" >&2
  exit 2
fi
bundle=$(cd "$bundle" && pwd)
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
python=${PYTHON:-python3}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}

echo "== device"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
else
  echo "nvidia-smi: not found"
fi
echo "== JAX (JAX_PLATFORMS=$JAX_PLATFORMS)"
"$python" -c "import jax, sys; print('Python', sys.version.split()[0], '| JAX', jax.__version__, '|', jax.devices())" || {
  echo "gpu_benchmark.sh: JAX found no device for JAX_PLATFORMS=$JAX_PLATFORMS with $python (JAX_PLATFORMS=cpu runs on the CPU)" >&2
  exit 1
}

# The order puts the goal row (one_weird_trick, bfloat16) first.
default_args="--variant=one_weird_trick,paper --precision=mixed_bfloat16,float32 --batch_size=128,256,512,1024"
read -r -a args <<<"${GPU_BENCHMARK_ARGS:-$default_args}"

echo "== benchmark: ${args[*]} $*"
# From inside the bundle: `python -m` puts the working directory first on sys.path, and an
# alexnet_tf folder there (a checkout) would stand in for the bundle's.
cd "$bundle"
PYTHONPATH="$bundle${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax \
  "$python" -m alexnet_tf.benchmark.keras_backend "${args[@]}" "$@" --json="$out"
echo "== wrote $out"
