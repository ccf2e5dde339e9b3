#!/usr/bin/env bash
# The backbone on the torch versions users have: a throwaway venv per torch release, each
# with mmengine and mmcv-lite (mmcv without compiled ops: enough for the backbone), then the
# backbone tests in it. Writes docs/compat_matrix.md (the README links it).
#
#   tools/compat_matrix.sh            # the full matrix (torch 2.1.2 and 2.14.1)
#   tools/compat_matrix.sh --short    # torch 2.1.2 only: import, shapes, train step, the
#                                     # README's python snippets (CI)
#
# The full stack with compiled mmcv ops (mmdet's detectors) stays on the pinned set of
# tools/setup_env.sh; this proves the backbone, its registration, its
# checkpoints, its CPU conversion and the TorchScript ONNX export on every torch in the table.
#
# Environment:
#   PYTHON             interpreter for the venvs (default: python3.11, then python3)
#   MMDUALTOKEN_CACHE  where the venvs are kept between runs (default: ~/.cache/mmdualtoken)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MMDUALTOKEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmdualtoken}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
SHORT=0
[[ "${1:-}" == "--short" ]] && SHORT=1

# torch release | what else that torch needs | why it is in the matrix
ROWS=(
  "2.1.2|numpy<2|OpenMMLab's mmcv 2.1.0 wheels are built for torch <= 2.1"
  "2.14.1||the newest torch here; the pinned set of tools/setup_env.sh"
)
if [[ $SHORT == 1 ]]; then ROWS=("${ROWS[0]}"); fi
COMMON=(mmengine==0.10.7 mmcv-lite==2.1.0 pytest pytest-xdist hypothesis)
# onnx and onnxruntime come from the deploy extra's file, as the README installs them for its
# export snippet (which runs here): without them torch 2.1 cannot export at all
DEPLOY_EXTRA="$ROOT/requirements/deploy.txt"

# the backbone tests: they import torch, mmengine, mmcv and mmdualtoken only
TESTS=(tests/test_compat.py tests/test_import.py tests/test_models/test_dualtoken_vit.py
       tests/test_models/test_layers.py tests/test_deploy/test_cpu_fusion.py
       tests/test_models/test_pretrained_loading.py tests/test_models/test_onnx_export.py
       tests/test_checkpoint_loading.py tests/test_readme.py::test_python_snippet_runs)
# tests that need what the matrix leaves out on purpose: the three frameworks, torch.export
DESELECT=(-k "not framework and not dynamo and not torch_compile")
if [[ $SHORT == 1 ]]; then
  TESTS=(tests/test_import.py tests/test_models/test_dualtoken_vit.py
         tests/test_readme.py::test_python_snippet_runs)
  DESELECT=(-k "not framework and (import or shapes or train_step or python_snippet)")
fi

table="| torch | numpy | mmengine | mmcv-lite | backbone tests | time |
|---|---|---|---|---|---|"
status=0
for row in "${ROWS[@]}"; do
  IFS='|' read -r torch_version extra why <<<"$row"
  venv="$CACHE/matrix/torch-$torch_version"
  printf '\n==> [matrix] torch %s (%s)\n' "$torch_version" "$why"
  if [[ ! -f "$venv/.ready" ]]; then
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --progress-bar off \
      "setuptools<82" "torch==$torch_version" ${extra:+"$extra"} "${COMMON[@]}" -r "$DEPLOY_EXTRA"
    touch "$venv/.ready"
  fi
  versions="$("$venv/bin/python" -c 'import torch, numpy, mmengine, mmcv; print(torch.__version__, numpy.__version__, mmengine.__version__, mmcv.__version__)')"
  read -r v_torch v_numpy v_mmengine v_mmcv <<<"$versions"
  start=$(date +%s)
  set +e
  (cd "$ROOT" && PYTHONPATH="$ROOT" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
     -n 2 "${TESTS[@]}" "${DESELECT[@]}" 2>&1 | tee "$venv/last-run.txt" | tail -n 15)
  rc=${PIPESTATUS[0]}
  set -e
  summary="$(grep -E '^[0-9]+ (passed|failed)|(passed|failed).* in ' "$venv/last-run.txt" | tail -n1 \
             | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*//')"
  [[ $rc == 0 ]] || status=1
  table+="
| $v_torch | $v_numpy | $v_mmengine | $v_mmcv | ${summary:-no summary (exit $rc)} | $(( $(date +%s) - start )) s |"
done

printf '\n%s\n' "$table"
if [[ $SHORT == 0 ]]; then
  {
    echo "# Compatibility matrix"
    echo
    echo "Written by \`tools/compat_matrix.sh\` on $(date -u +%Y-%m-%d) (Python $("$PY" -c 'import platform; print(platform.python_version())'), CPU)."
    echo "Each row is a fresh venv with that torch, mmengine and mmcv-lite; the backbone tests run in it."
    echo
    echo "$table"
  } >"$ROOT/docs/compat_matrix.md"
  echo "[matrix] wrote docs/compat_matrix.md"
fi
exit $status
