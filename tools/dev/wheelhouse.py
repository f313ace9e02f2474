"""``make wheelhouse DIR=...``: every file ``make install WHEELHOUSE=DIR``
needs on a machine without network, downloaded here (with network).

    python tools/dev/wheelhouse.py --dir DIR [--python 3.12]
        [--platform manylinux_2_28_x86_64] [--torch] [--torch-variant cu126]

What goes in (the pins of requirements/runtime.txt, tests.txt and
build.txt, resolved by pip for the target Python and platform):

- a wheel of every pinned requirement and of everything they require,
  except torch and what only torch requires (the target machine's torch is
  kept by the installer); ``--torch`` adds the pinned torch and its own
  requirements (``--torch-variant cu126`` from download.pytorch.org);
- mmcv's sdist (the installer builds mmcv's ops there, against that
  machine's torch), mmdet's wheel and the ``# no-deps`` lines, without
  their requirements (as the installer installs them);
- requirements/build.txt (setuptools, wheel, ninja) for that mmcv build;
- ``wheelhouse.json``: the target, the requirement files' digest (the
  installer refuses a wheelhouse made for other pins) and the file list.

The target defaults to this interpreter's Python and this machine's
manylinux tag. NOTE: pip matches ``--platform`` tags literally, so
``manylinux_2_28_x86_64`` is widened here to every older manylinux tag the
same glibc runs (2_27 ... 2_5, manylinux2014/2010/1): PyPI's wheels carry
the oldest tag they support.

Standard library only; pip does the resolving (``pip install --dry-run
--report``, which reads wheel metadata, not whole wheels where the index
serves it) and the downloading (``pip download --no-deps``).
"""
import argparse
import json
import os
import os.path as osp
import platform as host_platform
import re
import subprocess
import sys
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from install_plan import MMCV_VERSION, MMDET_VERSION, ROOT, TORCH_INDEX  # noqa: E402
from install_plan import TORCH_VARIANT_RE  # noqa: E402
from install_plan import WHEELHOUSE_MANIFEST as MANIFEST  # noqa: E402
from install_plan import WHEELHOUSE_REQ_FILES as REQ_FILES  # noqa: E402
from install_plan import pinned_torch, read_requirements, requirements_digest  # noqa: E402

#: the manylinux aliases of PEP 600 tags (glibc 2.17, 2.12, 2.5)
LEGACY_MANYLINUX = {(2, 17): 'manylinux2014', (2, 12): 'manylinux2010', (2, 5): 'manylinux1'}


class WheelhouseError(Exception):
    """Making the wheelhouse failed: the message says why."""


# -- the target ------------------------------------------------------------
def host_platform_tag() -> str:
    """This machine's manylinux tag: ``manylinux_2_<glibc minor>_<arch>``."""
    libc, version = host_platform.libc_ver()
    if libc != 'glibc' or not version:
        raise WheelhouseError('this machine has no glibc: pass --platform (e.g. '
                              'manylinux_2_28_x86_64) for the target machine')
    major, minor = (int(x) for x in version.split('.')[:2])
    return f'manylinux_{major}_{minor}_{host_platform.machine()}'


def platform_tags(tag: str) -> List[str]:
    """``tag`` and every older tag a machine of ``tag`` installs, newest
    first: ``manylinux_2_28_x86_64`` -> 2_28, 2_27, ..., 2_17,
    manylinux2014, ..., manylinux1. Other tags (``linux_x86_64``,
    ``macosx_...``) are returned as they are."""
    m = re.fullmatch(r'manylinux_(\d+)_(\d+)_(\w+)', tag)
    if not m:
        return [tag]
    major, minor, arch = int(m.group(1)), int(m.group(2)), m.group(3)
    tags = []
    for glibc in range(minor, 4, -1):
        tags.append(f'manylinux_{major}_{glibc}_{arch}')
        if (major, glibc) in LEGACY_MANYLINUX:
            tags.append(f'{LEGACY_MANYLINUX[major, glibc]}_{arch}')
    return tags


def target_args(python: str, platform: str) -> List[str]:
    """pip's options selecting wheels for CPython ``python`` on ``platform``."""
    if not re.fullmatch(r'3\.\d+', python):
        raise WheelhouseError(f'--python {python!r}: give a CPython version such as 3.12')
    abi = 'cp' + python.replace('.', '')
    args = ['--only-binary=:all:', '--python-version', python, '--implementation', 'cp',
            '--abi', abi, '--abi', 'abi3', '--abi', 'none']
    for tag in platform_tags(platform):
        args += ['--platform', tag]
    return args


# -- what goes in ------------------------------------------------------------
def canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def requirement_name(spec: str) -> str:
    return canonical(re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', spec).group(1))


def split_roots(reqs: Sequence[Tuple[str, str, bool]]) -> Tuple[List[str], List[str]]:
    """(lines pip resolves with their requirements, lines fetched alone):
    torch is never a root (:func:`closure` decides), mmcv, mmdet and the
    ``# no-deps`` lines are fetched without their requirements, as the
    installer installs them."""
    resolved, alone = [], []
    for name, line, nodeps in reqs:
        key = canonical(name)
        if key == 'torch':
            continue
        (alone if nodeps or key in ('mmcv', 'mmdet') else resolved).append(line)
    return resolved, alone


def closure(report: dict, roots: Iterable[str], with_torch: bool) -> Dict[str, str]:
    """{name: version} of what pip's ``--report`` resolved that the roots
    need, walking each package's ``Requires-Dist`` (entries under an extra
    are not followed: no root asks for extras). Without ``with_torch`` the
    walk stops at torch, so what only torch requires (sympy, networkx,
    nvidia-*, triton) stays out."""
    resolved = {canonical(item['metadata']['name']): item['metadata'] for item in
                report['install']}
    keep: Dict[str, str] = {}
    todo = [requirement_name(r) for r in roots] + (['torch'] if with_torch else [])
    while todo:
        name = todo.pop()
        if name in keep or name not in resolved or (name == 'torch' and not with_torch):
            continue
        meta = resolved[name]
        keep[name] = meta['version']
        for dep in meta.get('requires_dist') or ():
            _, _, marker = dep.partition(';')
            if 'extra' not in marker:
                todo.append(requirement_name(dep))
    return keep


# -- pip -----------------------------------------------------------------------
def pip(python_exe: str, *args: str) -> None:
    cmd = [python_exe, '-m', 'pip', *args]
    print('[wheelhouse] pip ' + ' '.join(args[:12]) + (' ...' if len(args) > 12 else ''),
          flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise WheelhouseError(f'pip {args[0]} failed (command above); nothing is removed '
                              'from the wheelhouse, rerun to complete it')


def resolve(python_exe: str, lines: Sequence[str], torch_pin: str,
            target: Sequence[str], pip_source: Sequence[str]) -> dict:
    """pip's resolution of ``lines`` for the target, without installing
    (``--dry-run --report``); torch held at its pin."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints = osp.join(tmp, 'constraints.txt')
        with open(constraints, 'w') as f:
            f.write(f'torch=={torch_pin}\n')
        report = osp.join(tmp, 'report.json')
        # --target: pip refuses platform options otherwise; nothing is
        # written there with --dry-run
        pip(python_exe, 'install', '--dry-run', '--ignore-installed', '--quiet', '--report',
            report, '--target', osp.join(tmp, 'target'), '-c', constraints, *pip_source,
            *target, *lines)
        with open(report) as f:
            return json.load(f)


def make_wheelhouse(out_dir: str, python: str, platform: str, with_torch: bool,
                    torch_variant: Optional[str], python_exe: str = sys.executable,
                    root: str = ROOT) -> dict:
    """Fill ``out_dir`` and write its manifest; returns the manifest."""
    if torch_variant and not TORCH_VARIANT_RE.fullmatch(torch_variant):
        raise WheelhouseError(f'--torch-variant {torch_variant!r}: use cpu or cu<version> '
                              '(cu126, cu128, ...)')
    if torch_variant and not with_torch:
        raise WheelhouseError('--torch-variant picks the torch build: add --torch')
    reqs = read_requirements([osp.join(root, p) for p in REQ_FILES])
    torch_pin = pinned_torch(reqs)
    resolved_lines, alone = split_roots(reqs)
    target = target_args(python, platform)
    os.makedirs(out_dir, exist_ok=True)

    report = resolve(python_exe, resolved_lines, torch_pin, target, ())
    keep = closure(report, resolved_lines, with_torch and not torch_variant)
    pip(python_exe, 'download', '--no-deps', '--dest', out_dir, *target,
        *sorted(f'{n}=={v}' for n, v in keep.items()))
    # wheels of the lines the installer installs without their requirements
    # (mmdet, albumentations, ...); mmcv as its source: built on the target
    wheels_alone = [line for line in alone if requirement_name(line) != 'mmcv']
    pip(python_exe, 'download', '--no-deps', '--dest', out_dir, *target, *wheels_alone)
    pip(python_exe, 'download', '--no-deps', '--no-binary', ':all:', '--dest', out_dir,
        f'mmcv=={MMCV_VERSION}')
    torch_note = None
    if with_torch and torch_variant:
        url = TORCH_INDEX.format(variant=torch_variant)
        pip(python_exe, 'download', '--dest', out_dir, '--index-url', url, *target,
            f'torch=={torch_pin}')
        torch_note = f'{torch_pin} ({torch_variant}, {url})'
    elif with_torch:
        torch_note = f'{keep.get("torch", torch_pin)} (pip\'s configured index)'

    files = sorted(f for f in os.listdir(out_dir) if f != MANIFEST)
    manifest = dict(python=python, platform=platform,
                    torch=torch_note, mmcv=MMCV_VERSION, mmdet=MMDET_VERSION,
                    requirements=list(REQ_FILES), requirements_sha256=requirements_digest(root),
                    files=files)
    with open(osp.join(out_dir, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dir', required=True, help='the wheelhouse folder (created)')
    parser.add_argument('--python', default='%d.%d' % sys.version_info[:2],
                        help='target CPython (default: this one)')
    parser.add_argument('--platform', default=None,
                        help='target platform tag (default: this machine\'s manylinux tag)')
    parser.add_argument('--torch', action='store_true',
                        help='add the pinned torch and its requirements')
    parser.add_argument('--torch-variant', default=None,
                        help='with --torch: the build from download.pytorch.org/whl/<variant>')
    args = parser.parse_args(argv)
    try:
        manifest = make_wheelhouse(osp.abspath(args.dir), args.python,
                                   args.platform or host_platform_tag(), args.torch,
                                   args.torch_variant)
    except WheelhouseError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'[wheelhouse] {len(manifest["files"])} files for CPython {manifest["python"]} on '
          f'{manifest["platform"]} in {osp.abspath(args.dir)} (torch: '
          f'{manifest["torch"] or "not included: the target keeps its own"})')
    print(f'[wheelhouse] on the target: make install WHEELHOUSE={osp.abspath(args.dir)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
