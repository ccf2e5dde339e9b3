#!/usr/bin/env bash
# One set-up path for mmdualtoken on a fresh CPU machine (used by `make demo` and `make test`).
#
# Creates .venv in the repository, installs the torch/torchvision pair that works with the
# OpenMMLab stack here, builds mmcv 2.1.0 with its compiled ops from the source release
# (cached outside the repository and reused), then installs mmengine, mmdet, mmsegmentation,
# mmpretrain and this package in editable mode, and mmdeploy without its dependencies
# (docs/deployment.md), and lays out Fashion-MNIST from Debian's package (as root it installs
# the package). A second run with nothing changed is a no-op.
# Every version comes from requirements/constraints.txt (the one place exact pins live;
# setup.py states ranges).
#
# Environment:
#   PYTHON             interpreter to build the venv from (default: python3.11, then python3)
#   MMDUALTOKEN_CACHE  where the built mmcv wheel is kept (default: ~/.cache/mmdualtoken)
#   MAX_JOBS           parallel compile jobs for mmcv (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
CACHE="${MMDUALTOKEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmdualtoken}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
pinned() {  # the exact version of package $1 in the constraints file
  local v
  v="$(grep -iE "^$1==" "$CONSTRAINTS" | head -n1 | cut -d= -f3 | cut -d' ' -f1)"
  [[ -n "$v" ]] || { echo "[setup] ERROR: $1 is not pinned in $CONSTRAINTS" >&2; exit 1; }
  echo "$v"
}
TORCH_SPEC="torch==$(pinned torch)"
TORCHVISION_SPEC="torchvision==$(pinned torchvision)"
SETUPTOOLS_SPEC="setuptools==$(pinned setuptools)"   # < 82: mmcv's setup.py and mmengine's `mmdet::` configs need pkg_resources
MMCV_VERSION="$(pinned mmcv)"

step() { printf '\n==> [setup] %s\n' "$*"; }
die() { printf '\n[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# A stamp keyed on everything that decides the environment's contents: same inputs, nothing to do.
stamp_key() {
  cat "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" "$ROOT"/requirements/*.txt | sha256sum | cut -c1-16
}
STAMP="$VENV/.mmdualtoken-setup-$(stamp_key)"
if [[ -f "$STAMP" ]]; then
  echo "[setup] environment up to date ($VENV)"
  exit 0
fi

SECONDS=0
step "checking the machine"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[[ -n "$PY" ]] || die "no python3 found; install Python 3.11 (with venv) or set PYTHON=/path/to/python3.11"
pyver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$pyver" == "3.11" ]] || die "Python 3.11 is required (the torch $TORCH_SPEC wheels here are cp311); $PY is $pyver. Set PYTHON=/path/to/python3.11"
"$PY" -c 'import venv' 2>/dev/null || die "$PY has no venv module; install python3.11-venv"
command -v g++ >/dev/null 2>&1 || die "no C++ compiler (g++) found: mmcv's ops are compiled at set-up; install g++ (Debian: apt-get install g++)"
mkdir -p "$CACHE" || die "cannot create the wheel cache $CACHE; set MMDUALTOKEN_CACHE to a writable directory"
free_gb=$(df -Pk "$ROOT" | awk 'NR==2 {print int($4/1048576)}')
if [[ ! -d "$VENV/lib" && "$free_gb" -lt 10 ]]; then
  die "only ${free_gb} GB free on $(df -P "$ROOT" | awk 'NR==2 {print $6}'); the environment needs about 8 GB (torch alone is 5.5 GB)"
fi
echo "python $pyver ($PY), g++ $(g++ -dumpversion), ${free_gb} GB free, cache $CACHE"

if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
# pip's output without the registry mirror's noise ("Location ... is ignored"); pipefail
# keeps pip's own exit status.
pip_install() {
  "$VPY" -m pip install --disable-pip-version-check --progress-bar off -c "$CONSTRAINTS" "$@" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}

step "build tools ($SETUPTOOLS_SPEC, wheel, ninja)"
pip_install -q "$SETUPTOOLS_SPEC" wheel ninja

step "torch and torchvision ($TORCH_SPEC, $TORCHVISION_SPEC)"
pip_install -q "$TORCH_SPEC" "$TORCHVISION_SPEC"

# A compiled mmcv only works with the torch it was built against, and has CUDA kernels only
# when built where CUDA was available: the cache key holds both.
ops_key="$("$VPY" -c "import torch; print('torch' + torch.__version__.replace('+', '_') + '-' + ('cuda' + str(torch.version.cuda) if torch.cuda.is_available() else 'cpu'))")"
WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION/$ops_key"
# Where torch sees a GPU the ops get CUDA kernels (mmdet's detectors need them there), built by
# an nvcc of torch's CUDA release; elsewhere CPU ops only.
FORCE_CUDA=0
if [[ "$ops_key" == *-cuda* ]]; then FORCE_CUDA=1; fi
if ! "$VPY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
  wheel="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$wheel" ]]; then
    step "building mmcv $MMCV_VERSION with its ops for $ops_key (about 13 minutes on 2 cores; done once, cached in $WHEEL_DIR)"
    if [[ "$FORCE_CUDA" == 1 ]]; then
      torch_cuda="${ops_key##*-cuda}"
      nvcc_cuda="$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
      [[ "$nvcc_cuda" == "$torch_cuda" ]] || die "torch sees a GPU, so mmcv's ops are built with CUDA kernels, which needs nvcc of CUDA $torch_cuda (torch's); found ${nvcc_cuda:-no nvcc}. Put that CUDA's bin on PATH (CUDA_HOME), or install OpenMMLab's prebuilt mmcv (docs/get_started.md, \"GPUs\") and rerun"
    fi
    build="$(mktemp -d)"
    trap 'rm -rf "$build"' EXIT
    pip_install -q mmengine numpy packaging pyyaml yapf addict Pillow opencv-python
    "$VPY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$build" || die "could not download the mmcv $MMCV_VERSION source release from PyPI"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # torch >= 2.13 headers require C++20; mmcv 2.1.0 hard-codes C++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q -- '-std=c++20' "$src/setup.py" || die "could not switch mmcv's C++ standard to C++20 in $src/setup.py"
    (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$VPY" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation -w "$build/dist" .) \
      || die "building mmcv $MMCV_VERSION failed (see the compiler output above)"
    mkdir -p "$WHEEL_DIR"
    cp "$build"/dist/mmcv-"$MMCV_VERSION"-*.whl "$WHEEL_DIR"/
    wheel="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
  else
    step "mmcv $MMCV_VERSION from the cached wheel $wheel"
  fi
  pip_install -q "$wheel"
fi
"$VPY" -c "import mmcv.ops; from mmcv.ops import nms" || die "mmcv's compiled ops do not import"
if [[ "$FORCE_CUDA" == 1 ]]; then
  "$VPY" -c "from mmcv.ops import get_compiling_cuda_version as v; assert v() != 'not available'" \
    || die "mmcv's ops were built without CUDA kernels although torch sees a GPU"
fi

step "mmengine, mmdet, mmsegmentation, mmpretrain and mmdualtoken (editable, all tasks, deploy and test extras)"
pip_install -q -e "$ROOT[all,deploy,tests]"

# mmdeploy pins protobuf<=3.20.2, older than onnx accepts: installed without its dependencies,
# as docs/deployment.md tells users, plus aenum, the one of them that its export to ONNX
# Runtime imports and nothing else here installs (grpcio is for SNPE; multiprocess is a
# fallback for torch.multiprocessing)
step "mmdeploy $(pinned mmdeploy) without its dependencies, and aenum"
pip_install -q --no-deps "mmdeploy==$(pinned mmdeploy)" "aenum==$(pinned aenum)"

# real images for the suite and docs/fashion_mnist.md: Debian's package (installed as root),
# laid out uncompressed under data/fashion_mnist; without it (not root, no apt) the set-up
# goes on and the Fashion-MNIST tests are skipped
step "Fashion-MNIST from Debian's dataset-fashion-mnist, under data/fashion_mnist"
"$VPY" "$ROOT/tools/data/prepare_fashion_mnist.py" --out "$ROOT/data/fashion_mnist" \
  || echo "[setup] WARNING: Fashion-MNIST not laid out (above): its tests are skipped"

step "checking the stack"
"$VPY" - <<'PY'
import torch, torchvision, mmengine, mmcv, mmdet, mmseg, mmpretrain, mmdualtoken, mmdeploy
from mmcv.ops import nms, RoIAlign  # compiled ops
from mmdeploy.apis import build_task_processor, torch2onnx
for m in (torch, torchvision, mmengine, mmcv, mmdet, mmseg, mmpretrain, mmdualtoken, mmdeploy):
    print(f"  {m.__name__:<12} {m.__version__}")
PY
rm -f "$VENV"/.mmdualtoken-setup-*
touch "$STAMP"
echo "[setup] done in $((SECONDS / 60)) min $((SECONDS % 60)) s: activate with 'source .venv/bin/activate'"
