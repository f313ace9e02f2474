#!/usr/bin/env bash
# Idempotent installer for rtdetr_mm into the *current* Python environment
# (${PYTHON:-python}). Installs only what is missing or at the wrong version.
# Every decision is made by tools/dev/install_plan.py (standard library only,
# unit-tested); this script only carries the plan out, in this order:
#   0. torch: an installed torch within the tested range (2.4 to 2.13.x) is
#      kept (and pinned for pip as a constraint, so nothing replaces it); one
#      outside it is refused; a missing one is installed: the pinned
#      torch== of requirements/runtime.txt, TORCH_VARIANT=cpu|cu126|...
#      picking the build (download.pytorch.org/whl/<variant>);
#   1. requirements/runtime.txt + requirements/tests.txt (exact pins; a line
#      marked `# no-deps` is installed with pip --no-deps),
#   2. mmcv 2.1.0 with compiled ops, built against that torch: CUDA ops when
#      torch has CUDA and nvcc is found (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST
#      from the variable, the visible GPUs or a default list), CPU ops
#      otherwise or with MMCV_WITH_CUDA=0; the wheel is cached in
#      $RTDETR_MM_WHEEL_CACHE/<python_torch_cuda_ops key>/ and built from the
#      sdist there if absent (10-15 min on 2 cores for CPU ops),
#   3. mmdet 3.3.0 with --no-deps (pip must never try to resolve mmcv for it),
#   4. rtdetr_mm itself: pip install -e . --no-deps.
# When everything is present it runs the plan's check and exits (seconds).
# INSTALL_DRY_RUN=1 prints the plan and changes nothing.
# WHEELHOUSE=DIR installs offline: every pip call gets --no-index
# --find-links DIR (a folder made by `make wheelhouse`, tools/dev/wheelhouse.py;
# the planner checks it was made for this Python and these pins).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
WHEEL_CACHE="${RTDETR_MM_WHEEL_CACHE:-$HOME/.cache/rtdetr_mm/wheels}"
PLANNER="$ROOT/tools/dev/install_plan.py"
PLANNER_ARGS=(--cache "$WHEEL_CACHE")
[[ -z "${WHEELHOUSE:-}" ]] || PLANNER_ARGS+=(--wheelhouse "$WHEELHOUSE")
MMCV_VERSION=2.1.0
MMDET_VERSION=3.3.0

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore

log() { echo "[install] $*"; }
pip_() { log "pip $*"; "$PYTHON" -m pip "$@"; }
# Sets TORCH_ACTION, TORCH_PIP_ARGS, TORCH_CONSTRAINT, PIP_REQS, NODEPS_REQS,
# TODO, NEED_MMCV, NEED_MMDET, NEED_SELF, MMCV_BUILD_ENV, MMCV_CACHE_DIR,
# MMCV_WHEEL, MMCV_LEGACY_WHEEL, PIP_SOURCE_ARGS (see install_plan.shell);
# exits 1 when the planner refuses (its `error: ...` is on stderr).
plan() {
    local out
    out="$("$PYTHON" "$PLANNER" --shell "${PLANNER_ARGS[@]}")" || exit 1
    eval "$out"
}

START=$SECONDS
log "python: $(command -v "$PYTHON") ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
if [[ -n "${INSTALL_DRY_RUN:-}" ]]; then
    "$PYTHON" "$PLANNER" --explain "${PLANNER_ARGS[@]}" | sed 's/^/[install] /'
    exit "${PIPESTATUS[0]}"
fi

plan
log "torch: $TORCH_REASON"
if [[ "$TORCH_ACTION" == install ]]; then
    "$PYTHON" -m pip --version >/dev/null 2>&1 || "$PYTHON" -m ensurepip --upgrade
    pip_ install "${PIP_SOURCE_ARGS[@]}" "${TORCH_PIP_ARGS[@]}"
    plan  # the mmcv build depends on the torch now installed
    [[ "$TORCH_ACTION" == keep ]] || { log "torch still missing after installing it"; exit 1; }
fi

if [[ -z "$TODO" ]]; then
    log "all requirements present (torch kept, mmcv $MMCV_VERSION with ops, mmdet" \
        "$MMDET_VERSION, rtdetr_mm editable from $ROOT): nothing to do" \
        "($((SECONDS - START))s)"
    exit 0
fi
log "to install:"
sed 's/^/[install]   /' <<<"$TODO"

"$PYTHON" -m pip --version >/dev/null 2>&1 || "$PYTHON" -m ensurepip --upgrade
# The kept torch as a pip constraint: a requirement that wants another torch
# makes pip fail instead of replacing it.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "$TORCH_CONSTRAINT" >"$CONSTRAINTS"

# 1. Everything pip may resolve normally.
if ((${#PIP_REQS[@]})); then
    pip_ install "${PIP_SOURCE_ARGS[@]}" -c "$CONSTRAINTS" "${PIP_REQS[@]}"
fi
# 1b. Lines marked `# no-deps` (albumentations, albucore): without their
#     requirements, which would add opencv-python-headless, a second cv2 over
#     the pinned opencv-python; their other requirements are plain lines.
if ((${#NODEPS_REQS[@]})); then
    pip_ install "${PIP_SOURCE_ARGS[@]}" --no-deps "${NODEPS_REQS[@]}"
fi

# 2. mmcv with compiled ops, from the cached wheel or built into the cache.
if [[ -n "$NEED_MMCV" ]]; then
    log "mmcv: $MMCV_REASON"
    mkdir -p "$MMCV_CACHE_DIR"
    if [[ -z "$MMCV_WHEEL" && -n "$MMCV_LEGACY_WHEEL" ]]; then
        # a wheel of the earlier flat cache layout, built for this very case
        log "adopting $MMCV_LEGACY_WHEEL into $MMCV_CACHE_DIR"
        ln -f "$MMCV_LEGACY_WHEEL" "$MMCV_CACHE_DIR/" 2>/dev/null \
            || cp "$MMCV_LEGACY_WHEEL" "$MMCV_CACHE_DIR/"
        MMCV_WHEEL="$MMCV_CACHE_DIR/$(basename "$MMCV_LEGACY_WHEEL")"
    fi
    if [[ -z "$MMCV_WHEEL" ]]; then
        log "no cached mmcv $MMCV_VERSION wheel in $MMCV_CACHE_DIR: building it" \
            "from source (10-15 min on 2 cores for CPU ops)"
        pip_ install "${PIP_SOURCE_ARGS[@]}" -c "$CONSTRAINTS" -r "$ROOT/requirements/build.txt"
        build_start=$SECONDS
        # --no-cache-dir: pip's own wheel cache is not keyed by the torch
        # version the ops were compiled against; our cache is the cache.
        env "${MMCV_BUILD_ENV[@]}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "$PYTHON" -m pip wheel "${PIP_SOURCE_ARGS[@]}" --no-build-isolation --no-deps --no-cache-dir \
            "mmcv==$MMCV_VERSION" -w "$MMCV_CACHE_DIR"
        log "mmcv wheel built in $((SECONDS - build_start))s (${MMCV_BUILD_ENV[*]})"
        shopt -s nullglob
        wheels=("$MMCV_CACHE_DIR"/mmcv-"$MMCV_VERSION"-*.whl)
        shopt -u nullglob
        ((${#wheels[@]})) || { log "mmcv build produced no wheel"; exit 1; }
        MMCV_WHEEL="${wheels[0]}"
    else
        log "using cached wheel $MMCV_WHEEL"
    fi
    # --force-reinstall: an ops-less (or other torch's) mmcv 2.1.0 would
    # otherwise be kept
    pip_ install "${PIP_SOURCE_ARGS[@]}" --no-deps --force-reinstall "$MMCV_WHEEL"
fi

# 3. mmdet without its dependency resolution (its runtime requirements are
#    pinned in requirements/runtime.txt and installed in step 1).
if [[ -n "$NEED_MMDET" ]]; then
    pip_ install "${PIP_SOURCE_ARGS[@]}" --no-deps "mmdet==$MMDET_VERSION"
fi

# 4. rtdetr_mm itself, editable, with the setuptools installed above.
if [[ -n "$NEED_SELF" ]]; then
    pip_ install "${PIP_SOURCE_ARGS[@]}" --no-deps --no-build-isolation -e "$ROOT"
fi

plan
if [[ -n "$TODO" ]]; then
    log "still unmet after installing:"
    sed 's/^/[install]   /' <<<"$TODO"
    exit 1
fi
log "smoke test: import mmcv.ops, mmdet.models"
(cd / && "$PYTHON" -c 'import mmcv.ops, mmdet.models')
log "done in $((SECONDS - START))s"
