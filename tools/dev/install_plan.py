"""What ``tools/install.sh`` (``make install``) does, decided from facts about
the target Python environment. Standard library only: it runs under
``${PYTHON}`` before any requirement is installed.

    python tools/dev/install_plan.py [--shell | --explain] [--cache DIR]

``--explain`` (``INSTALL_DRY_RUN=1 make install``) prints the plan and
changes nothing; ``--shell`` prints it as bash assignments for install.sh.
Exit status 1 with ``error: <message>`` when the installer must refuse.

The decisions (pure functions of :class:`Facts`, unit-tested with fake
facts in tests/test_tools/test_install_plan.py):

- **torch** (:func:`plan_torch`): an installed torch whose release is within
  the tested range ``TORCH_RANGE`` (2.4 to 2.13.x, any build: CPU, CUDA,
  NGC's ``2.6.0a0+...``) is KEPT, and pip is given a constraint that pins it
  for every later install, so no requirement can replace it; outside the
  range the installer REFUSES, naming the version, the range and what to
  do; only a MISSING torch is installed: the pinned ``torch==`` of
  requirements/runtime.txt, from ``https://download.pytorch.org/whl/<v>``
  with ``TORCH_VARIANT=<v>`` (``cpu``, ``cu126``, ``cu128``, ...), else from
  pip's configured index.
- **mmcv's ops** (:func:`plan_mmcv_build`): mmcv 2.1.0 is built from its
  sdist against the torch that is there, with CUDA ops (``FORCE_CUDA=1``,
  ``TORCH_CUDA_ARCH_LIST`` from the variable, else the visible GPUs'
  compute capabilities, else :func:`default_arch_list`) when torch has CUDA
  and nvcc is found, with CPU ops otherwise; ``MMCV_WITH_CUDA=0`` forces CPU
  ops (a quick build), ``MMCV_WITH_CUDA=1`` refuses to fall back to them.
- **the wheel cache** (:func:`cache_key`): one folder per Python, torch
  (version and CUDA) and ops build (nvcc version and architectures) under
  ``$RTDETR_MM_WHEEL_CACHE``; a wheel of the earlier flat layout is adopted
  where it was built for (:func:`legacy_wheel_fits`).
- **what is missing** (:func:`unmet_requirements`): the pins of
  requirements/runtime.txt and tests.txt against the installed versions,
  mmcv's compiled ops (present, loadable with this torch, CUDA when wanted),
  mmdet and rtdetr_mm itself (editable from this checkout).
- **offline** (:func:`check_wheelhouse`, ``WHEELHOUSE=DIR``): every pip call
  gets ``--no-index --find-links DIR``; the wheelhouse (``make wheelhouse``,
  tools/dev/wheelhouse.py) must be made for this Python and these pins, hold
  torch when torch is missing and mmcv's sdist when no cached wheel fits.
"""
import argparse
import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REQ_FILES = ('requirements/runtime.txt', 'requirements/tests.txt')
#: what a wheelhouse is made from (its manifest keeps their digest)
WHEELHOUSE_REQ_FILES = REQ_FILES + ('requirements/build.txt', )
WHEELHOUSE_MANIFEST = 'wheelhouse.json'
#: torch releases rtdetr_mm is expected to work with (major, minor), both
#: ends included; tested: the pinned one (requirements/runtime.txt)
TORCH_RANGE = ((2, 4), (2, 13))
TORCH_INDEX = 'https://download.pytorch.org/whl/{variant}'
TORCH_VARIANT_RE = re.compile(r'cpu|cu\d{3,}')
MMCV_VERSION = '2.1.0'
MMDET_VERSION = '3.3.0'
#: the torch every wheel of the flat cache layout was built against (the
#: installer then pinned torch to it and built CPU ops on a CPU torch)
LEGACY_TORCH = '2.13.0'
ENV_KEYS = ('TORCH_VARIANT', 'MMCV_WITH_CUDA', 'TORCH_CUDA_ARCH_LIST')


class InstallError(Exception):
    """The installer refuses: the message says why and what to do."""


@dataclass(frozen=True)
class Facts:
    """What the decisions depend on (see :func:`gather_facts`).

    Attributes:
        python: (major, minor) of the target Python.
        torch: Installed torch version (``'2.13.0+cpu'``), None if missing.
        torch_cuda: ``torch.version.cuda`` (``'12.6'``), None for a CPU build.
        torch_error: Why an installed torch does not import, else None.
        nvcc: CUDA release nvcc reports (``'12.6'``), None if not found.
        gpus: Compute capabilities of the visible GPUs (``('8.0', '9.0')``).
        env: ``TORCH_VARIANT``, ``MMCV_WITH_CUDA``, ``TORCH_CUDA_ARCH_LIST``.
        pinned_torch: The ``torch==`` pin of requirements/runtime.txt.
        mmcv_ops: The installed mmcv's compiled ops: None (none), ``'cpu'``,
            ``'cuda<version>'``, or ``'broken: <error>'`` (they do not load).
    """
    python: Tuple[int, int]
    torch: Optional[str] = None
    torch_cuda: Optional[str] = None
    torch_error: Optional[str] = None
    nvcc: Optional[str] = None
    gpus: Tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    pinned_torch: str = '2.13.0'
    mmcv_ops: Optional[str] = None


@dataclass(frozen=True)
class Wheelhouse:
    """An offline source made by ``make wheelhouse`` (tools/dev/wheelhouse.py).

    Attributes:
        path: Its folder.
        python: (major, minor) it was made for (its manifest).
        requirements_sha256: Digest of the requirement files it was made
            from (:func:`requirements_digest`).
        files: The file names in the folder.
    """
    path: str
    python: Tuple[int, int]
    requirements_sha256: str
    files: Tuple[str, ...]

    def has(self, prefix: str, suffix: str) -> bool:
        return any(f.startswith(prefix) and f.endswith(suffix) for f in self.files)


@dataclass(frozen=True)
class TorchPlan:
    """``action`` 'keep' (``version`` installed; ``constraint`` pins it for
    pip) or 'install' (``pip_args`` after ``pip install``)."""
    action: str
    version: str
    reason: str
    pip_args: Tuple[str, ...] = ()
    constraint: str = ''


@dataclass(frozen=True)
class MmcvBuild:
    """How mmcv is built: ``ops`` 'cuda' or 'cpu', the build's environment
    variables, the CUDA architectures (None for CPU ops) and why."""
    ops: str
    env: Tuple[Tuple[str, str], ...]
    arch_list: Optional[str]
    reason: str


# -- versions ------------------------------------------------------------
def release(version: str) -> Tuple[int, ...]:
    """(2, 6, 0) of '2.6.0', '2.6.0+cu124', '2.6.0a0+ecf3bae40a.nv25.01'."""
    m = re.match(r'\d+(\.\d+)*', version.strip())
    return tuple(int(x) for x in m.group(0).split('.')) if m else ()


def _compare(a: Tuple[int, ...], b: Tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0, ) * (n - len(a)), b + (0, ) * (n - len(b))
    return (a > b) - (a < b)


def satisfies(installed: str, spec: str) -> bool:
    """``installed`` meets every clause of ``spec`` (``==2.1.0``,
    ``>=77,<81``); ``==`` ignores a local tag (``+cpu``)."""
    for clause in filter(None, (c.strip() for c in spec.split(','))):
        op, want = re.match(r'(==|>=|<=|!=|<|>)\s*(\S+)', clause).groups()
        if op == '==':
            if installed.split('+')[0] != want:
                return False
            continue
        c = _compare(release(installed), release(want))
        if not {'>=': c >= 0, '<=': c <= 0, '>': c > 0, '<': c < 0, '!=': c != 0}[op]:
            return False
    return True


def range_text() -> str:
    (a, b), (c, d) = TORCH_RANGE
    return f'{a}.{b} to {c}.{d}.x'


# -- torch ---------------------------------------------------------------
def plan_torch(facts: Facts, wheelhouse: Optional[Wheelhouse] = None) -> TorchPlan:
    """Keep an installed torch within :data:`TORCH_RANGE`, refuse one
    outside it (:class:`InstallError`), install the pinned one if missing
    (from the wheelhouse when there is one)."""
    variant = facts.env.get('TORCH_VARIANT', '').strip()
    if variant and not TORCH_VARIANT_RE.fullmatch(variant):
        raise InstallError(
            f'TORCH_VARIANT={variant!r} is not a torch wheel variant: use cpu or cu<version> '
            f'(cu126, cu128, ...), the folder names of {TORCH_INDEX.format(variant="")}')
    if facts.torch is None and wheelhouse is not None:
        if not wheelhouse.has(f'torch-{facts.pinned_torch}', '.whl'):
            raise InstallError(
                f'torch is missing and the wheelhouse {wheelhouse.path} holds no torch '
                f'{facts.pinned_torch} wheel: make it with `make wheelhouse DIR=... TORCH=1 '
                '[TORCH_VARIANT=cu126]`, or install a torch within '
                f'{range_text()} first')
        return TorchPlan('install', facts.pinned_torch,
                         f'torch is missing: the pinned {facts.pinned_torch} from the '
                         f'wheelhouse {wheelhouse.path}', (f'torch=={facts.pinned_torch}', ))
    if facts.torch is None:
        args = (f'torch=={facts.pinned_torch}', )
        if variant:
            url = TORCH_INDEX.format(variant=variant)
            return TorchPlan('install', facts.pinned_torch,
                             f'torch is missing: the pinned {facts.pinned_torch} ({variant}) '
                             f'from {url}', args + ('--index-url', url))
        return TorchPlan('install', facts.pinned_torch,
                         f'torch is missing: the pinned {facts.pinned_torch} from pip\'s '
                         'configured index (TORCH_VARIANT=cpu|cu126|... picks the build)', args)
    if facts.torch_error:
        raise InstallError(f'torch {facts.torch} is installed but does not import: '
                           f'{facts.torch_error}; repair or uninstall it, then rerun make install')
    low, high = TORCH_RANGE
    have = release(facts.torch)[:2]
    if len(have) < 2 or not low <= have <= high:
        raise InstallError(
            f'torch {facts.torch} is installed; rtdetr_mm is tested with torch {range_text()} '
            f'(pinned: {facts.pinned_torch}). Install a torch in that range for your CUDA '
            f'(e.g. pip install torch=={facts.pinned_torch} --index-url '
            f'{TORCH_INDEX.format(variant="cu126")}), or uninstall torch and rerun '
            f'`make install TORCH_VARIANT=cpu|cu126|...` to install the pinned one')
    build = f'CUDA {facts.torch_cuda}' if facts.torch_cuda else 'CPU build'
    reason = f'torch {facts.torch} ({build}) is installed, within {range_text()}: kept'
    if variant:
        reason += f' (TORCH_VARIANT={variant} applies only when torch is missing)'
    return TorchPlan('keep', facts.torch, reason, constraint=f'torch=={facts.torch}')


# -- mmcv ----------------------------------------------------------------
def default_arch_list(cuda: str) -> str:
    """The architectures built for when no GPU is visible and
    ``TORCH_CUDA_ARCH_LIST`` is unset: every data-centre / desktop GPU the
    CUDA release compiles for since Volta (7.0; CUDA 13 dropped it), the
    newest also as PTX (JIT-compiled on later GPUs)."""
    version = release(cuda)[:2]
    if version >= (13, 0):
        return '7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'
    if version >= (12, 8):
        return '7.0;7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'
    if version >= (11, 8):
        return '7.0;7.5;8.0;8.6;8.9;9.0+PTX'
    return '7.0;7.5;8.0;8.6+PTX'


def plan_mmcv_build(facts: Facts) -> MmcvBuild:
    """CUDA ops when torch has CUDA and nvcc of the same major version is
    found (and ``MMCV_WITH_CUDA`` is not 0), CPU ops otherwise.

    NOTE: CPU ops also set ``CUDA_VISIBLE_DEVICES=`` for the build: mmcv's
    setup.py builds the CUDA ops whenever ``torch.cuda.is_available()``,
    whatever ``FORCE_CUDA`` says.
    """
    want = facts.env.get('MMCV_WITH_CUDA', '').strip()
    if want not in ('', '0', '1'):
        raise InstallError(f'MMCV_WITH_CUDA={want!r}: use 1 (CUDA ops), 0 (CPU ops) or leave '
                           'it unset (CUDA ops when torch has CUDA and nvcc is found)')

    def cpu(reason: str) -> MmcvBuild:
        return MmcvBuild('cpu', (('MMCV_WITH_OPS', '1'), ('FORCE_CUDA', '0'),
                                 ('CUDA_VISIBLE_DEVICES', '')), None, reason)

    if want == '0':
        return cpu('MMCV_WITH_CUDA=0: CPU ops')
    if not facts.torch_cuda:
        if want == '1':
            raise InstallError(f'MMCV_WITH_CUDA=1, but torch {facts.torch} is a CPU build: '
                               'install a CUDA build of torch, or drop MMCV_WITH_CUDA')
        return cpu(f'torch {facts.torch} has no CUDA: CPU ops')
    if not facts.nvcc:
        if want == '1':
            raise InstallError('MMCV_WITH_CUDA=1, but no nvcc was found ($CUDA_HOME/bin, PATH, '
                               f'/usr/local/cuda/bin): install the CUDA {facts.torch_cuda} '
                               'toolkit or set CUDA_HOME')
        return cpu(f'torch has CUDA {facts.torch_cuda} but no nvcc was found ($CUDA_HOME/bin, '
                   'PATH, /usr/local/cuda/bin): CPU ops (mmcv.ops.nms and batched_nms then '
                   'refuse CUDA tensors); install the CUDA toolkit and rerun for CUDA ops')
    if release(facts.nvcc)[:1] != release(facts.torch_cuda)[:1]:
        raise InstallError(
            f'nvcc is CUDA {facts.nvcc}, torch was built with CUDA {facts.torch_cuda}: torch '
            'builds no extension across CUDA major versions. Point CUDA_HOME at a CUDA '
            f'{release(facts.torch_cuda)[0]}.x toolkit, or set MMCV_WITH_CUDA=0 for CPU ops')
    arch = facts.env.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if arch:
        source = 'TORCH_CUDA_ARCH_LIST'
    elif facts.gpus:
        arch = ';'.join(sorted(set(facts.gpus), key=release))
        source = 'the visible GPUs'
    else:
        arch = default_arch_list(facts.nvcc)
        source = 'no GPU visible: the default list'
    return MmcvBuild('cuda', (('MMCV_WITH_OPS', '1'), ('FORCE_CUDA', '1'),
                              ('TORCH_CUDA_ARCH_LIST', arch)), arch,
                     f'torch has CUDA {facts.torch_cuda}, nvcc {facts.nvcc}: CUDA ops for '
                     f'{arch} ({source})')


def _clean(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9.+_-]+', '-', text).strip('-')


def cache_key(facts: Facts, build: MmcvBuild) -> str:
    """The wheel cache folder's name: Python, torch (version and its CUDA)
    and the ops build (nvcc and architectures), e.g.
    ``py3.11_torch2.13.0+cpu_cuda-none_ops-cpu`` or
    ``py3.12_torch2.6.0+cu124_cuda12.4_ops-cuda12.4-sm8.0-9.0``."""
    py = '%d.%d' % tuple(facts.python)
    cuda = f'cuda{facts.torch_cuda}' if facts.torch_cuda else 'cuda-none'
    ops = 'ops-cpu' if build.ops == 'cpu' else f'ops-cuda{facts.nvcc}-sm{build.arch_list}'
    return '_'.join(_clean(part) for part in (f'py{py}', f'torch{facts.torch}', cuda, ops))


def pytag(python: Sequence[int]) -> str:
    return 'cp%d%d' % tuple(python[:2])


def is_mmcv_wheel(name: str, python: Sequence[int]) -> bool:
    return name.startswith(f'mmcv-{MMCV_VERSION}-{pytag(python)}-') and name.endswith('.whl')


def legacy_wheel_fits(facts: Facts, build: MmcvBuild) -> bool:
    """A wheel of the flat cache layout (no key) was built by the earlier
    installer against torch ``LEGACY_TORCH``, with CPU ops on a CPU torch:
    it fits exactly that case."""
    return (build.ops == 'cpu' and facts.torch_cuda is None and facts.torch is not None
            and release(facts.torch) == release(LEGACY_TORCH))


# -- requirements ----------------------------------------------------------
def read_requirements(paths: Sequence[str]) -> List[Tuple[str, str, bool]]:
    """(name, 'name spec' line, no-deps) of each requirement line."""
    reqs = []
    for path in paths:
        with open(path) as f:
            for raw in f:
                line, _, comment = raw.partition('#')
                line = line.strip()
                if line:
                    name = re.match(r'[A-Za-z0-9_.\-]+', line).group(0)
                    reqs.append((name, line, comment.strip() == 'no-deps'))
    return reqs


def pinned_torch(reqs: Sequence[Tuple[str, str, bool]]) -> str:
    for name, line, _ in reqs:
        if name.lower() == 'torch':
            m = re.fullmatch(r'torch\s*==\s*(\S+)', line)
            if m:
                return m.group(1)
    raise InstallError('requirements/runtime.txt has no exact torch==<version> pin')


def unmet_requirements(reqs: Sequence[Tuple[str, str, bool]], facts: Facts, build: Optional[MmcvBuild],
                       installed: Callable[[str], Optional[str]]) -> List[Tuple[str, str, str]]:
    """(kind, requirement, why) of each unmet requirement; kind is 'pip',
    'nodeps' (a line marked ``# no-deps``), 'mmcv' or 'mmdet'. torch is
    :func:`plan_torch`'s business and never listed."""
    todo = []
    for name, line, nodeps in reqs:
        key = name.lower()
        if key == 'torch':
            continue
        kind = key if key in ('mmcv', 'mmdet') else ('nodeps' if nodeps else 'pip')
        have = installed(name)
        spec = line[len(name):].strip()
        if have is None:
            todo.append((kind, line, 'missing'))
        elif not satisfies(have, spec):
            todo.append((kind, line, f'found {have}'))
        elif kind == 'mmcv':
            if facts.mmcv_ops is None:
                todo.append((kind, line, 'installed without compiled ops'))
            elif facts.mmcv_ops and facts.mmcv_ops.startswith('broken'):
                todo.append((kind, line, f'its compiled ops do not load with torch '
                                         f'{facts.torch}: {facts.mmcv_ops[len("broken: "):]}'))
            elif build is not None and build.ops == 'cuda' and facts.mmcv_ops == 'cpu':
                todo.append((kind, line, 'installed with CPU ops only, CUDA ops wanted'))
    return todo


def unmet_self(root: str, installed: Callable[[str], Optional[str]],
               location: Callable[[], Optional[str]]) -> Optional[str]:
    """Why rtdetr_mm itself needs (re)installing from ``root``, else None."""
    setup_py = open(osp.join(root, 'setup.py')).read()
    version = re.search(r"version='([^']+)'", setup_py).group(1)
    have = installed('rtdetr_mm')
    where = location()
    if have != version:
        return f'found {have}, want {version}'
    if where is None or osp.realpath(where) != osp.realpath(osp.join(root, 'rtdetr_mm')):
        return f'imports from {where}, not {root}'
    return None


# -- offline ---------------------------------------------------------------
def requirements_digest(root: str = ROOT) -> str:
    """sha256 over :data:`WHEELHOUSE_REQ_FILES` (a wheelhouse's key)."""
    h = hashlib.sha256()
    for rel in WHEELHOUSE_REQ_FILES:
        with open(osp.join(root, rel), 'rb') as f:
            h.update(rel.encode() + b'\0' + f.read() + b'\0')
    return h.hexdigest()


def check_wheelhouse(wheelhouse: Wheelhouse, facts: Facts, digest: str) -> None:
    """Refuse a wheelhouse made for another Python or other pins: pip would
    fail later with a bare 'No matching distribution'."""
    if tuple(wheelhouse.python) != tuple(facts.python):
        raise InstallError(
            f'the wheelhouse {wheelhouse.path} was made for Python '
            f'{".".join(map(str, wheelhouse.python))}, this is Python '
            f'{".".join(map(str, facts.python))}: make one with `make wheelhouse DIR=... '
            f'PY={facts.python[0]}.{facts.python[1]}`')
    if wheelhouse.requirements_sha256 != digest:
        raise InstallError(
            f'the wheelhouse {wheelhouse.path} was made for other pins than this '
            f'checkout\'s {", ".join(WHEELHOUSE_REQ_FILES)}: make it again from this '
            'checkout with `make wheelhouse DIR=...`')


def read_wheelhouse(path: str) -> Wheelhouse:
    """The wheelhouse at ``path`` (its manifest must be there)."""
    manifest = osp.join(path, WHEELHOUSE_MANIFEST)
    try:
        with open(manifest) as f:
            data = json.load(f)
        python = tuple(int(x) for x in str(data['python']).split('.')[:2])
        digest = str(data['requirements_sha256'])
    except (OSError, ValueError, KeyError) as e:
        raise InstallError(f'WHEELHOUSE={path}: {manifest} cannot be read ({type(e).__name__}: '
                           f'{e}); make the wheelhouse with `make wheelhouse DIR={path}`')
    return Wheelhouse(path, python, digest, tuple(sorted(os.listdir(path))))


# -- the plan --------------------------------------------------------------
@dataclass
class Plan:
    torch: TorchPlan
    build: Optional[MmcvBuild] = None  # None until torch is there
    key: str = ''
    cache_dir: str = ''
    wheel: str = ''          # cached wheel to install ('' : build one)
    legacy_wheel: str = ''   # flat-layout wheel to adopt into cache_dir
    todo: List[Tuple[str, str, str]] = field(default_factory=list)
    wheelhouse: Optional[Wheelhouse] = None  # pip's only source when set


def make_plan(facts: Facts, reqs, cache_root: str, listdir: Callable[[str], List[str]],
              installed: Callable[[str], Optional[str]], self_todo: Optional[str],
              wheelhouse: Optional[Wheelhouse] = None, digest: str = '') -> Plan:
    """Every decision, from facts and lookups (fakes in the tests);
    ``digest`` (:func:`requirements_digest`) is checked against the
    wheelhouse's."""
    if wheelhouse is not None:
        check_wheelhouse(wheelhouse, facts, digest)
    plan = Plan(plan_torch(facts, wheelhouse), wheelhouse=wheelhouse)
    if plan.torch.action != 'keep':
        return plan  # the rest depends on the torch to be installed
    plan.build = plan_mmcv_build(facts)
    plan.key = cache_key(facts, plan.build)
    plan.cache_dir = osp.join(cache_root, plan.key)
    plan.todo = unmet_requirements(reqs, facts, plan.build, installed)
    if any(kind == 'mmcv' for kind, _, _ in plan.todo):
        wheels = sorted(n for n in listdir(plan.cache_dir) if is_mmcv_wheel(n, facts.python))
        if wheels:
            plan.wheel = osp.join(plan.cache_dir, wheels[-1])
        elif legacy_wheel_fits(facts, plan.build):
            legacy = sorted(n for n in listdir(cache_root) if is_mmcv_wheel(n, facts.python))
            if legacy:
                plan.legacy_wheel = osp.join(cache_root, legacy[-1])
        if (wheelhouse is not None and not plan.wheel and not plan.legacy_wheel
                and not wheelhouse.has(f'mmcv-{MMCV_VERSION}.', '.tar.gz')):
            raise InstallError(
                f'mmcv {MMCV_VERSION} must be built and neither the wheel cache '
                f'({plan.cache_dir}) nor the wheelhouse {wheelhouse.path} has it: the '
                f'wheelhouse lacks mmcv-{MMCV_VERSION}.tar.gz; make it again with `make '
                'wheelhouse DIR=...`')
    if self_todo:
        plan.todo.append(('self', 'rtdetr_mm', self_todo))
    return plan


def explain(plan: Plan, facts: Facts) -> str:
    """The plan in words (``INSTALL_DRY_RUN=1``)."""
    lines = [f'python {facts.python[0]}.{facts.python[1]}']
    if plan.wheelhouse is not None:
        lines.append(f'offline: pip installs from the wheelhouse {plan.wheelhouse.path} only '
                     '(--no-index)')
    lines.append(f'torch: {plan.torch.action} {plan.torch.version}: {plan.torch.reason}')
    if plan.build is None:
        lines.append('mmcv: decided once torch is installed (CUDA ops when it has CUDA and '
                     'nvcc is found)')
        return '\n'.join(lines)
    lines.append(f'mmcv build: {plan.build.reason}; build env: '
                 + ' '.join(f'{k}={v}' for k, v in plan.build.env))
    lines.append(f'wheel cache: {plan.cache_dir}')
    if not plan.todo:
        lines.append('nothing to install')
    for kind, req, why in plan.todo:
        lines.append(f'to install: {kind} {req} ({why})')
        if kind == 'mmcv':
            if plan.wheel:
                lines.append(f'  mmcv: cached wheel {plan.wheel}')
            elif plan.legacy_wheel:
                lines.append(f'  mmcv: cached wheel {plan.legacy_wheel} (earlier cache layout, '
                             f'built against torch {LEGACY_TORCH} with CPU ops: linked into '
                             'the folder above)')
            else:
                lines.append('  mmcv: no cached wheel: built from the sdist (10-15 min on 2 '
                             'cores for CPU ops; far longer with CUDA ops)')
    return '\n'.join(lines)


def shell(plan: Plan) -> str:
    """The plan as bash assignments (``eval`` in install.sh)."""
    def arr(name, items):
        return f'{name}=(' + ' '.join(shlex.quote(i) for i in items) + ')'

    def var(name, value):
        return f'{name}={shlex.quote(value)}'

    todo = plan.todo
    out = [var('TORCH_ACTION', plan.torch.action), var('TORCH_REASON', plan.torch.reason),
           arr('TORCH_PIP_ARGS', plan.torch.pip_args),
           var('TORCH_CONSTRAINT', plan.torch.constraint),
           arr('PIP_REQS', [r for k, r, _ in todo if k == 'pip']),
           arr('NODEPS_REQS', [r for k, r, _ in todo if k == 'nodeps']),
           var('TODO', '\n'.join(f'{k} {r} ({why})' for k, r, why in todo)),
           var('NEED_MMCV', '1' if any(k == 'mmcv' for k, _, _ in todo) else ''),
           var('NEED_MMDET', '1' if any(k == 'mmdet' for k, _, _ in todo) else ''),
           var('NEED_SELF', '1' if any(k == 'self' for k, _, _ in todo) else ''),
           var('MMCV_REASON', plan.build.reason if plan.build else ''),
           arr('MMCV_BUILD_ENV', [f'{k}={v}' for k, v in plan.build.env] if plan.build else []),
           var('MMCV_CACHE_DIR', plan.cache_dir), var('MMCV_WHEEL', plan.wheel),
           var('MMCV_LEGACY_WHEEL', plan.legacy_wheel),
           arr('PIP_SOURCE_ARGS', ['--no-index', '--find-links', plan.wheelhouse.path]
               if plan.wheelhouse is not None else [])]
    return '\n'.join(out)


# -- facts of this environment -----------------------------------------------
# Run in a child: a torch (or an mmcv extension built for another torch)
# that crashes on import must not take the planner down with it.
_PROBE = r'''
import glob, importlib.util, json, os, sys
out = {}
try:
    import torch
    out['cuda'] = torch.version.cuda
    if torch.version.cuda and torch.cuda.is_available():
        out['gpus'] = ['%d.%d' % torch.cuda.get_device_capability(i)
                       for i in range(torch.cuda.device_count())]
except BaseException as e:
    out['error'] = f'{type(e).__name__}: {e}'
print(json.dumps(out), flush=True)
ext = sys.argv[1] if len(sys.argv) > 1 else ''
if ext and 'error' not in out:
    try:
        spec = importlib.util.spec_from_file_location('mmcv._ext', ext)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        v = module.get_compiling_cuda_version()
        print(json.dumps({'mmcv_ops': 'cpu' if v == 'not available' else 'cuda' + v}))
    except BaseException as e:
        print(json.dumps({'mmcv_ops': f'broken: {type(e).__name__}: {e}'}))
'''


def installed_version(name: str) -> Optional[str]:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _mmcv_ext_file() -> Optional[str]:
    """The installed mmcv's compiled extension (``mmcv/_ext*.so``), if any."""
    try:
        files = md.distribution('mmcv').files or []
    except md.PackageNotFoundError:
        return None
    for f in files:
        if str(f).startswith('mmcv/_ext') and str(f).endswith(('.so', '.pyd')):
            return str(f.locate())
    return None


def find_nvcc(env: Mapping[str, str]) -> Optional[str]:
    """nvcc where torch's extension builder looks: ``$CUDA_HOME`` (or
    ``$CUDA_PATH``), then PATH, then /usr/local/cuda."""
    home = env.get('CUDA_HOME') or env.get('CUDA_PATH')
    if home:
        return osp.join(home, 'bin', 'nvcc')
    return shutil.which('nvcc') or (
        '/usr/local/cuda/bin/nvcc' if osp.exists('/usr/local/cuda/bin/nvcc') else None)


def _run(cmd: Sequence[str], timeout: float = 60) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True,
                              timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return ''


def gather_facts(env: Mapping[str, str] = os.environ) -> Facts:
    """This interpreter's facts (torch and mmcv probed in a child)."""
    reqs = read_requirements([osp.join(ROOT, p) for p in REQ_FILES])
    torch_version = installed_version('torch')
    probe, mmcv_ops = {}, None
    if torch_version is not None:
        ext = _mmcv_ext_file() or ''
        # the probe's JSON lines (torch may print something of its own)
        lines = [line for line in _run([sys.executable, '-c', _PROBE, ext],
                                       timeout=300).splitlines() if line.startswith('{')]
        probe = json.loads(lines[0]) if lines else {'error': 'importing it crashed'}
        if ext and 'error' not in probe:
            mmcv_ops = (json.loads(lines[1])['mmcv_ops'] if len(lines) > 1
                        else 'broken: loading mmcv/_ext crashed the interpreter')
    nvcc_path, nvcc = find_nvcc(env), None
    if nvcc_path and osp.exists(nvcc_path):
        m = re.search(r'release (\d+\.\d+)', _run([nvcc_path, '--version']))
        nvcc = m.group(1) if m else None
    gpus = tuple(probe.get('gpus', ()))
    if not gpus and shutil.which('nvidia-smi'):
        out = _run(['nvidia-smi', '--query-gpu=compute_cap', '--format=csv,noheader'])
        gpus = tuple(x.strip() for x in out.splitlines() if re.fullmatch(r'\d+\.\d+', x.strip()))
    return Facts(python=tuple(sys.version_info[:2]), torch=torch_version,
                 torch_cuda=probe.get('cuda'), torch_error=probe.get('error'), nvcc=nvcc,
                 gpus=gpus, env={k: env[k] for k in ENV_KEYS if k in env},
                 pinned_torch=pinned_torch(reqs), mmcv_ops=mmcv_ops)


def _self_location() -> Optional[str]:
    # what is installed, not the checkout we may be standing in
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p not in ('', '.', os.getcwd(), ROOT, osp.dirname(
        osp.abspath(__file__)))]
    try:
        spec = importlib.util.find_spec('rtdetr_mm')
    finally:
        sys.path[:] = saved
    return osp.dirname(spec.origin) if spec and spec.origin else None


def _listdir(path: str) -> List[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='The decisions of tools/install.sh')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--shell', action='store_true', help='print bash assignments')
    mode.add_argument('--explain', action='store_true', help='print the plan (default)')
    parser.add_argument('--cache', default=osp.join(osp.expanduser('~'), '.cache', 'rtdetr_mm',
                                                     'wheels'),
                        help='the mmcv wheel cache ($RTDETR_MM_WHEEL_CACHE)')
    parser.add_argument('--wheelhouse', default='',
                        help='install offline from this folder (make wheelhouse; $WHEELHOUSE)')
    args = parser.parse_args(argv)
    try:
        facts = gather_facts()
        reqs = read_requirements([osp.join(ROOT, p) for p in REQ_FILES])
        wheelhouse = read_wheelhouse(osp.abspath(args.wheelhouse)) if args.wheelhouse else None
        plan = make_plan(facts, reqs, args.cache, _listdir, installed_version,
                         unmet_self(ROOT, installed_version, _self_location), wheelhouse,
                         requirements_digest())
    except InstallError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(shell(plan) if args.shell else explain(plan, facts))
    return 0


if __name__ == '__main__':
    sys.exit(main())
