"""Installing without network: ``make wheelhouse DIR=...``
(tools/dev/wheelhouse.py) and ``make install WHEELHOUSE=DIR`` (the
planner's offline decisions in tools/dev/install_plan.py).

The last test is the whole path on this machine: a wheelhouse made here
(with torch), a fresh venv, ``tools/install.sh`` with pip cut off from
every index and from the network, then ``import rtdetr_mm, mmcv.ops,
mmdet.models`` in the venv. mmcv's ops come from the keyed wheel cache
that ``make install`` filled (building them from the wheelhouse's sdist
takes 10-15 minutes here; the build command is the online one plus
``--no-index --find-links``)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tools import load_tool

wh_mod = load_tool('dev/wheelhouse')
plan_mod = load_tool('dev/install_plan')
Facts, InstallError, Wheelhouse = plan_mod.Facts, plan_mod.InstallError, plan_mod.Wheelhouse

PY = (3, 11)
DIGEST = 'd' * 64
REQS = [('torch', 'torch==2.13.0', False), ('mmcv', 'mmcv==2.1.0', False),
        ('mmdet', 'mmdet==3.3.0', False), ('numpy', 'numpy==2.4.6', False)]


# -- the target's tags ---------------------------------------------------------
def test_platform_tags_widen_to_every_older_manylinux():
    tags = wh_mod.platform_tags('manylinux_2_28_x86_64')
    assert tags[0] == 'manylinux_2_28_x86_64' and tags[-1] == 'manylinux1_x86_64'
    assert len(tags) == 24 + 3  # 2_28 ... 2_5 and the three legacy aliases
    # PEP 600: the alias sits at its glibc
    assert tags.index('manylinux2014_x86_64') == tags.index('manylinux_2_17_x86_64') + 1
    assert 'manylinux_2_29_x86_64' not in tags
    assert wh_mod.platform_tags('manylinux_2_17_aarch64')[-1] == 'manylinux1_aarch64'
    assert wh_mod.platform_tags('macosx_11_0_arm64') == ['macosx_11_0_arm64']


def test_target_args_pick_the_python_and_refuse_a_bad_one():
    args = wh_mod.target_args('3.12', 'manylinux_2_17_x86_64')
    assert args[:4] == ['--only-binary=:all:', '--python-version', '3.12', '--implementation']
    assert ['--abi', 'cp312'] == args[5:7] and args.count('--platform') == 16
    with pytest.raises(wh_mod.WheelhouseError, match="--python '3'"):
        wh_mod.target_args('3', 'manylinux_2_17_x86_64')


# -- what goes in --------------------------------------------------------------
def _item(name, version, *requires):
    return dict(metadata=dict(name=name, version=version, requires_dist=list(requires)))


REPORT = dict(install=[
    _item('accelerate', '1.15.0', 'torch>=2.0.0', 'numpy<3', 'pytest; extra == "testing"'),
    _item('torch', '2.13.0', 'sympy>=1.13', 'Jinja2', 'filelock',
          'nvidia-cublas; platform_system == "Linux"'),
    _item('sympy', '1.14', 'mpmath<1.4'), _item('mpmath', '1.3'), _item('jinja2', '3.1', 'MarkupSafe'),
    _item('MarkupSafe', '3.0'), _item('nvidia-cublas', '12.6'),
    _item('Transformers', '5.24.0', 'filelock', 'numpy>=1.17', 'huggingface-hub<2'),
    _item('huggingface_hub', '1.0', 'filelock'), _item('filelock', '3.20'), _item('numpy', '2.4.6'),
    _item('pytest', '9.0.3')])


def test_closure_leaves_out_torch_and_what_only_torch_requires():
    keep = wh_mod.closure(REPORT, ['accelerate==1.15.0', 'transformers==5.24.0'], False)
    assert keep == {'accelerate': '1.15.0', 'numpy': '2.4.6', 'transformers': '5.24.0',
                    'filelock': '3.20', 'huggingface-hub': '1.0'}
    with_torch = wh_mod.closure(REPORT, ['accelerate==1.15.0'], True)
    assert set(with_torch) == {'accelerate', 'numpy', 'torch', 'sympy', 'mpmath', 'jinja2',
                               'markupsafe', 'filelock', 'nvidia-cublas'}
    # an extra nobody asked for is not followed (pytest came in through it)
    assert 'pytest' not in with_torch


def test_mmcv_mmdet_and_no_deps_lines_are_fetched_alone_and_torch_never_a_root():
    reqs = REQS + [('albucore', 'albucore==0.0.24', True)]
    resolved, alone = wh_mod.split_roots(reqs)
    assert resolved == ['numpy==2.4.6']
    assert alone == ['mmcv==2.1.0', 'mmdet==3.3.0', 'albucore==0.0.24']


def test_torch_variant_needs_torch():
    with pytest.raises(wh_mod.WheelhouseError, match='add --torch'):
        wh_mod.make_wheelhouse('/nonexistent', '3.11', 'manylinux_2_17_x86_64', False, 'cu126')
    with pytest.raises(wh_mod.WheelhouseError, match="'cuda'"):
        wh_mod.make_wheelhouse('/nonexistent', '3.11', 'manylinux_2_17_x86_64', True, 'cuda')


# -- the installer's offline decisions ------------------------------------------
def wheelhouse(files=('mmcv-2.1.0.tar.gz', ), python=PY, digest=DIGEST):
    return Wheelhouse('/wh', python, digest, tuple(files))


def offline_plan(facts, wh, cache=()):
    have = dict(torch=facts.torch, mmcv=None, mmdet='3.3.0', numpy='2.4.6')
    return plan_mod.make_plan(facts, REQS, '/cache', lambda d: list(cache), have.get, None,
                              wh, DIGEST)


def test_missing_torch_comes_from_the_wheelhouse_or_is_refused():
    plan = offline_plan(Facts(python=PY), wheelhouse(
        ['torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl']))
    assert plan.torch.action == 'install'
    assert plan.torch.pip_args == ('torch==2.13.0', )  # no index URL: the wheelhouse's
    assert 'from the wheelhouse /wh' in plan.torch.reason
    with pytest.raises(InstallError, match=r'torch is missing and the wheelhouse /wh holds no '
                                           r'torch 2\.13\.0 wheel: .*make wheelhouse .*TORCH=1'):
        offline_plan(Facts(python=PY), wheelhouse())


def test_wheelhouse_of_another_python_or_other_pins_is_refused():
    cpu = Facts(python=PY, torch='2.13.0+cpu')
    with pytest.raises(InstallError, match=r'made for Python 3\.12, this is Python 3\.11: '
                                           r'.*PY=3\.11'):
        offline_plan(cpu, wheelhouse(python=(3, 12)))
    with pytest.raises(InstallError, match='made for other pins than this checkout'):
        offline_plan(cpu, wheelhouse(digest='e' * 64))


def test_mmcv_build_needs_the_sdist_unless_a_cached_wheel_fits():
    cpu = Facts(python=PY, torch='2.13.0+cpu')
    assert offline_plan(cpu, wheelhouse()).todo[0][0] == 'mmcv'
    with pytest.raises(InstallError, match='the wheelhouse lacks mmcv-2.1.0.tar.gz'):
        offline_plan(cpu, wheelhouse(files=()))
    cached = offline_plan(cpu, wheelhouse(files=()),
                          cache=['mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'])
    assert cached.wheel.endswith('mmcv-2.1.0-cp311-cp311-linux_x86_64.whl')


def test_every_pip_call_is_cut_off_from_the_indexes():
    plan = offline_plan(Facts(python=PY, torch='2.13.0+cpu'), wheelhouse())
    script = plan_mod.shell(plan) + '\nprintf "%s|" "${PIP_SOURCE_ARGS[@]}"'
    out = subprocess.run(['bash', '-c', script], capture_output=True, text=True, check=True)
    assert out.stdout == '--no-index|--find-links|/wh|'
    online = plan_mod.make_plan(Facts(python=PY, torch='2.13.0+cpu'), REQS, '/cache',
                                lambda d: [], lambda n: None, None)
    assert 'PIP_SOURCE_ARGS=()' in plan_mod.shell(online)
    # install.sh passes them to each of its pip install / pip wheel calls
    with open(osp.join(ROOT, 'tools/install.sh')) as f:
        calls = [line for line in f if ('pip_ install' in line or 'pip wheel' in line)
                 and not line.lstrip().startswith('#')]
    assert len(calls) == 8 and all('"${PIP_SOURCE_ARGS[@]}"' in c for c in calls), calls


def test_wheelhouse_without_manifest_names_the_folder(tmp_path):
    with pytest.raises(InstallError, match=f'WHEELHOUSE={tmp_path}: .*wheelhouse.json cannot '
                                           f'be read .*make wheelhouse DIR={tmp_path}'):
        plan_mod.read_wheelhouse(str(tmp_path))


# -- the whole path, offline ------------------------------------------------------
def _offline_env(**extra):
    """pip with no index, no config file (this machine's pip.conf adds local
    indexes and find-links), an unreachable index URL and proxies."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('PIP_') and k.lower() not in ('http_proxy', 'https_proxy')}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX='1',
               PIP_INDEX_URL='http://127.0.0.1:9/simple', http_proxy='http://127.0.0.1:9',
               https_proxy='http://127.0.0.1:9', PIP_DISABLE_PIP_VERSION_CHECK='1',
               OMP_NUM_THREADS='1', **extra)
    return env


@pytest.mark.timeout(900)
def test_offline_install_from_a_wheelhouse_into_a_fresh_venv(tmp_path):
    wh = tmp_path / 'wheelhouse'
    made = subprocess.run(['make', '-s', 'wheelhouse', f'DIR={wh}', 'TORCH=1',
                           f'PYTHON={sys.executable}'], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    manifest = json.loads((wh / 'wheelhouse.json').read_text())
    assert manifest['python'] == '%d.%d' % sys.version_info[:2]
    names = manifest['files']
    assert 'mmcv-2.1.0.tar.gz' in names and any(n.startswith('torch-2.13.0') for n in names)
    assert any(n.startswith('mmdet-3.3.0-') for n in names)

    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
    python = str(venv / 'bin' / 'python')
    env = _offline_env(PYTHON=python, WHEELHOUSE=str(wh))
    # the cut-off is real: pip finds nothing for a package not in the wheelhouse
    probe = subprocess.run([python, '-m', 'pip', 'download', '--no-deps', '-d',
                            str(tmp_path / 'probe'), 'six==1.16.0'], env=env,
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode != 0 and 'No matching distribution' in probe.stderr, probe.stderr

    proc = subprocess.run(['bash', osp.join(ROOT, 'tools/install.sh')], env=env, cwd='/',
                          capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert f'torch is missing: the pinned 2.13.0 from the wheelhouse {wh}' in log
    assert f'pip install --no-index --find-links {wh}' in log
    assert '[install] done in' in log
    check = subprocess.run(
        [python, '-c', 'import torch, rtdetr_mm, mmcv.ops, mmdet.models, transformers; '
         'from mmcv.ops import nms; '
         'b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]); '
         'k = nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5)[1]; '
         'print(rtdetr_mm.__file__, k.tolist())'], env=env, cwd='/', capture_output=True,
        text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    location, kept = check.stdout.strip().splitlines()[-1].split(' ', 1)
    assert location == osp.join(ROOT, 'rtdetr_mm', '__init__.py') and kept == '[0, 2]'
