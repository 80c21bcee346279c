#!/usr/bin/env bash
# The GPU check in one command, for a machine with one NVIDIA GPU and no network (see benchmarks/gpu_check.py).
# Wheels for packages that machine lacks (grain, array_record, ml_collections, portpicker) are installed from
# .whl/ when it exists, and .gpu_site (tools/make_gpu_carry.py: the text encoder in float16, which [world]
# needs) joins the path; sorajax itself runs from this checkout. Extra arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
if [ -d .gpu_site ]; then export PYTHONPATH="$PWD/.gpu_site${PYTHONPATH:+:$PYTHONPATH}"; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
# A second call on the same machine (e.g. --sections wan) reuses the first call's compiles.
exec python3 benchmarks/gpu_check.py --torch_python python3 --compile_cache /tmp/sorajax_jax_cache "$@"
