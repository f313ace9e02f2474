#!/usr/bin/env bash
# Idempotent installer for rtdetr_mm into the *current* Python environment
# (${PYTHON:-python}). Installs only what is missing or at the wrong version:
#   requirements/runtime.txt + requirements/tests.txt (exact pins; a line
#     marked `# no-deps` is installed with pip --no-deps),
#   mmcv 2.1.0 with compiled ops (cached wheel in $RTDETR_MM_WHEEL_CACHE,
#     built from the sdist there if absent: 6-10 min on 2 cores),
#   mmdet 3.3.0 with --no-deps (its metadata would otherwise drag nothing in,
#     but pip must never try to resolve mmcv for it),
#   rtdetr_mm itself: pip install -e . --no-deps.
# When everything is present it runs one Python check and exits (seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
WHEEL_CACHE="${RTDETR_MM_WHEEL_CACHE:-$HOME/.cache/rtdetr_mm/wheels}"
REQ_FILES=("$ROOT/requirements/runtime.txt" "$ROOT/requirements/tests.txt")
MMCV_VERSION=2.1.0
MMDET_VERSION=3.3.0

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore

log() { echo "[install] $*"; }
pip_() { log "pip $*"; "$PYTHON" -m pip "$@"; }

# Prints one line per unmet requirement: "pip <requirement>", "nodeps
# <requirement>" (a line marked `# no-deps`), "mmcv <why>", "mmdet <why>" or
# "self <why>". Prints nothing when all is in place.
check() {
    "$PYTHON" - "$ROOT" "${REQ_FILES[@]}" <<'PY'
import importlib.metadata as md
import importlib.util
import os
import re
import sys

root, req_files = sys.argv[1], sys.argv[2:]
# look at what is installed, not at the checkout we may be standing in
sys.path = [p for p in sys.path if p not in ('', '.', os.getcwd(), root)]


def release(version):
    m = re.match(r'\d+(\.\d+)*', version)
    return tuple(int(x) for x in m.group(0).split('.')) if m else ()


def compare(a, b):
    n = max(len(a), len(b))
    a, b = a + (0, ) * (n - len(a)), b + (0, ) * (n - len(b))
    return (a > b) - (a < b)


def satisfies(installed, spec):
    for clause in filter(None, (c.strip() for c in spec.split(','))):
        op, want = re.match(r'(==|>=|<=|!=|<|>)\s*(\S+)', clause).groups()
        if op == '==':  # exact, ignoring a local tag such as +cpu
            if installed.split('+')[0] != want:
                return False
            continue
        c = compare(release(installed), release(want))
        ok = {'>=': c >= 0, '<=': c <= 0, '>': c > 0, '<': c < 0,
              '!=': c != 0}[op]
        if not ok:
            return False
    return True


def installed_version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


for path in req_files:
    with open(path) as f:
        for raw in f:
            line, _, comment = raw.partition('#')
            line = line.strip()
            if not line:
                continue
            name, spec = re.match(r'([A-Za-z0-9_.\-]+)\s*(.*)', line).groups()
            have = installed_version(name)
            kind = name.lower() if name.lower() in ('mmcv', 'mmdet') else 'pip'
            if comment.strip() == 'no-deps':
                kind = 'nodeps'
            if have is None:
                print(kind, line, '(missing)')
            elif not satisfies(have, spec):
                print(kind, line, f'(found {have})')
            elif kind == 'mmcv':
                files = md.distribution('mmcv').files or []
                if not any(str(f).startswith('mmcv/_ext') for f in files):
                    print('mmcv', line, '(installed without compiled ops)')

setup_py = open(os.path.join(root, 'setup.py')).read()
version = re.search(r"version='([^']+)'", setup_py).group(1)
have = installed_version('rtdetr_mm')
spec = importlib.util.find_spec('rtdetr_mm')
where = os.path.dirname(spec.origin) if spec and spec.origin else None
if have != version:
    print('self rtdetr_mm', f'(found {have}, want {version})')
elif where != os.path.join(root, 'rtdetr_mm'):
    print('self rtdetr_mm', f'(imports from {where}, not {root})')
PY
}

START=$SECONDS
log "python: $(command -v "$PYTHON") ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
TODO="$(check)"
if [[ -z "$TODO" ]]; then
    log "all requirements present (mmcv $MMCV_VERSION with ops, mmdet" \
        "$MMDET_VERSION, rtdetr_mm editable from $ROOT): nothing to do" \
        "($((SECONDS - START))s)"
    exit 0
fi
log "to install:"
sed 's/^/[install]   /' <<<"$TODO"

"$PYTHON" -m pip --version >/dev/null 2>&1 || "$PYTHON" -m ensurepip --upgrade

# 1. Everything pip may resolve normally (torch is pinned, so pip takes the
#    CPU wheel where one is offered instead of the CUDA build).
mapfile -t PIP_REQS < <(awk '$1 == "pip" {print $2}' <<<"$TODO")
if ((${#PIP_REQS[@]})); then
    pip_ install "${PIP_REQS[@]}"
fi
# 1b. Lines marked `# no-deps` (albumentations, albucore): without their
#     requirements, which would add opencv-python-headless, a second cv2 over
#     the pinned opencv-python; their other requirements are plain lines.
mapfile -t NODEPS_REQS < <(awk '$1 == "nodeps" {print $2}' <<<"$TODO")
if ((${#NODEPS_REQS[@]})); then
    pip_ install --no-deps "${NODEPS_REQS[@]}"
fi

# 2. mmcv with compiled ops, from the cached wheel or built into the cache.
if grep -q '^mmcv ' <<<"$TODO"; then
    PYTAG="$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"
    shopt -s nullglob
    wheels=("$WHEEL_CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl)
    shopt -u nullglob
    if ((${#wheels[@]} == 0)); then
        log "no cached mmcv $MMCV_VERSION wheel for $PYTAG in $WHEEL_CACHE:" \
            "building it from source (6-10 min on 2 cores)"
        mkdir -p "$WHEEL_CACHE"
        pip_ install -r "$ROOT/requirements/build.txt"
        build_start=$SECONDS
        # --no-cache-dir: pip's own wheel cache is not keyed by the torch
        # version the ops were compiled against; our cache is the cache.
        MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            pip_ wheel --no-build-isolation --no-deps --no-cache-dir \
            "mmcv==$MMCV_VERSION" -w "$WHEEL_CACHE"
        log "mmcv wheel built in $((SECONDS - build_start))s"
        shopt -s nullglob
        wheels=("$WHEEL_CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl)
        shopt -u nullglob
        ((${#wheels[@]})) || { log "mmcv build produced no wheel"; exit 1; }
    else
        log "using cached wheel ${wheels[0]}"
    fi
    # --force-reinstall: an ops-less mmcv 2.1.0 would otherwise be kept
    pip_ install --no-deps --force-reinstall "${wheels[0]}"
fi

# 3. mmdet without its dependency resolution (its runtime requirements are
#    pinned in requirements/runtime.txt and installed in step 1).
if grep -q '^mmdet ' <<<"$TODO"; then
    pip_ install --no-deps "mmdet==$MMDET_VERSION"
fi

# 4. rtdetr_mm itself, editable, with the setuptools installed above.
if grep -q '^self ' <<<"$TODO"; then
    pip_ install --no-deps --no-build-isolation -e "$ROOT"
fi

LEFT="$(check)"
if [[ -n "$LEFT" ]]; then
    log "still unmet after installing:"
    sed 's/^/[install]   /' <<<"$LEFT"
    exit 1
fi
log "smoke test: import mmcv.ops, mmdet.models"
(cd / && "$PYTHON" -c 'import mmcv.ops, mmdet.models')
log "done in $((SECONDS - START))s"
