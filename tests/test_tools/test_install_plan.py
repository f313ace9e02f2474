"""tools/install.sh's decisions (tools/dev/install_plan.py) with fake facts:
torch kept within 2.4..2.13.x, refused outside with a message, installed
only when missing (pip's index, or TORCH_VARIANT's); mmcv's build flags
(CUDA ops with torch's CUDA + nvcc, CPU ops otherwise or with
MMCV_WITH_CUDA=0, the architectures); the wheel cache key and the cached
wheel it finds (including the earlier flat layout); the bash the installer
evaluates; and a dry run of install.sh on this environment."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tools import load_tool

plan_mod = load_tool('dev/install_plan')
Facts, InstallError = plan_mod.Facts, plan_mod.InstallError

CPU = dict(python=(3, 11), torch='2.13.0+cpu')
GPU = dict(python=(3, 12), torch='2.6.0+cu124', torch_cuda='12.4', nvcc='12.4', gpus=('8.0', ))


def facts(**kw) -> 'Facts':
    return Facts(**kw)


def build_env(build) -> dict:
    return dict(build.env)


# -- torch ---------------------------------------------------------------
@pytest.mark.parametrize('version', ['2.4.0', '2.13.0+cpu', '2.6.0+cu124', '2.13.1',
                                     '2.6.0a0+ecf3bae40a.nv25.01'])
def test_torch_within_range_is_kept_and_pinned_for_pip(version):
    plan = plan_mod.plan_torch(facts(python=(3, 11), torch=version, torch_cuda='12.4'))
    assert plan.action == 'keep' and plan.version == version
    assert plan.pip_args == ()
    assert plan.constraint == f'torch=={version}'  # nothing may replace it


@pytest.mark.parametrize('version', ['2.3.1', '2.14.0', '1.13.1+cu117', '3.0.0', 'garbage'])
def test_torch_outside_range_is_refused_with_a_message(version):
    with pytest.raises(InstallError) as e:
        plan_mod.plan_torch(facts(python=(3, 11), torch=version))
    msg = str(e.value)
    assert f'torch {version} is installed' in msg
    assert '2.4 to 2.13.x' in msg and 'pinned: 2.13.0' in msg
    assert 'uninstall torch' in msg and 'TORCH_VARIANT' in msg


def test_torch_that_does_not_import_is_refused():
    with pytest.raises(InstallError, match=r'torch 2\.6\.0 is installed but does not import: '
                                           r'OSError: libcudart'):
        plan_mod.plan_torch(facts(python=(3, 11), torch='2.6.0',
                                  torch_error='OSError: libcudart.so.12'))


@pytest.mark.parametrize('variant, args', [
    ('', ('torch==2.13.0', )),
    ('cpu', ('torch==2.13.0', '--index-url', 'https://download.pytorch.org/whl/cpu')),
    ('cu126', ('torch==2.13.0', '--index-url', 'https://download.pytorch.org/whl/cu126')),
])
def test_missing_torch_is_installed_pinned(variant, args):
    env = {'TORCH_VARIANT': variant} if variant else {}
    plan = plan_mod.plan_torch(facts(python=(3, 11), env=env, pinned_torch='2.13.0'))
    assert plan.action == 'install' and plan.version == '2.13.0'
    assert plan.pip_args == args
    assert plan.constraint == ''


def test_pin_comes_from_runtime_txt():
    reqs = plan_mod.read_requirements([osp.join(ROOT, p) for p in plan_mod.REQ_FILES])
    with open(osp.join(ROOT, 'requirements/runtime.txt')) as f:
        line = next(x.strip() for x in f if x.startswith('torch=='))
    assert plan_mod.pinned_torch(reqs) == line.split('==')[1]


@pytest.mark.parametrize('variant', ['cuda12.6', 'cu12', 'gpu', 'cu126; rm -rf /'])
def test_bad_torch_variant_is_refused(variant):
    with pytest.raises(InstallError, match='TORCH_VARIANT=.*cu<version>'):
        plan_mod.plan_torch(facts(python=(3, 11), env={'TORCH_VARIANT': variant}))


def test_torch_variant_does_not_replace_an_installed_torch():
    plan = plan_mod.plan_torch(facts(**CPU, env={'TORCH_VARIANT': 'cu126'}))
    assert plan.action == 'keep' and plan.version == '2.13.0+cpu'
    assert 'TORCH_VARIANT=cu126 applies only when torch is missing' in plan.reason


# -- mmcv build flags ------------------------------------------------------
def test_cpu_torch_builds_cpu_ops_even_with_nvcc_and_a_gpu():
    build = plan_mod.plan_mmcv_build(facts(**CPU, nvcc='13.0', gpus=('9.0', )))
    assert build.ops == 'cpu' and build.arch_list is None
    # mmcv's setup.py builds CUDA ops whenever torch sees a GPU: hide it
    assert build_env(build) == {'MMCV_WITH_OPS': '1', 'FORCE_CUDA': '0',
                                'CUDA_VISIBLE_DEVICES': ''}
    assert 'has no CUDA' in build.reason


def test_cuda_torch_with_nvcc_builds_cuda_ops_for_the_visible_gpus():
    build = plan_mod.plan_mmcv_build(facts(**dict(GPU, gpus=('9.0', '8.0', '9.0', '10.0'))))
    assert build.ops == 'cuda'
    assert build_env(build) == {'MMCV_WITH_OPS': '1', 'FORCE_CUDA': '1',
                                'TORCH_CUDA_ARCH_LIST': '8.0;9.0;10.0'}
    assert 'CUDA_VISIBLE_DEVICES' not in build_env(build)


def test_arch_list_variable_wins_over_the_gpus():
    build = plan_mod.plan_mmcv_build(facts(**GPU, env={'TORCH_CUDA_ARCH_LIST': '8.6+PTX'}))
    assert build_env(build)['TORCH_CUDA_ARCH_LIST'] == '8.6+PTX'
    assert 'TORCH_CUDA_ARCH_LIST' in build.reason


@pytest.mark.parametrize('nvcc, arch', [
    ('12.4', '7.0;7.5;8.0;8.6;8.9;9.0+PTX'),
    ('12.8', '7.0;7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'),
    ('13.0', '7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'),  # CUDA 13 dropped Volta
])
def test_no_gpu_visible_builds_the_documented_default(nvcc, arch):
    build = plan_mod.plan_mmcv_build(facts(**dict(GPU, torch_cuda=nvcc, nvcc=nvcc, gpus=())))
    assert build_env(build)['TORCH_CUDA_ARCH_LIST'] == arch
    assert 'default list' in build.reason


def test_cuda_torch_without_nvcc_builds_cpu_ops_and_says_why():
    build = plan_mod.plan_mmcv_build(facts(**dict(GPU, nvcc=None)))
    assert build.ops == 'cpu' and build_env(build)['CUDA_VISIBLE_DEVICES'] == ''
    assert 'no nvcc was found' in build.reason and 'CUDA 12.4' in build.reason


def test_mmcv_with_cuda_0_forces_cpu_ops():
    build = plan_mod.plan_mmcv_build(facts(**GPU, env={'MMCV_WITH_CUDA': '0'}))
    assert build.ops == 'cpu' and build_env(build)['FORCE_CUDA'] == '0'
    assert build.reason.startswith('MMCV_WITH_CUDA=0')


@pytest.mark.parametrize('kw, match', [
    (dict(CPU), 'is a CPU build'),
    (dict(GPU, nvcc=None), 'no nvcc was found'),
])
def test_mmcv_with_cuda_1_refuses_to_fall_back(kw, match):
    with pytest.raises(InstallError, match=match):
        plan_mod.plan_mmcv_build(facts(**kw, env={'MMCV_WITH_CUDA': '1'}))


def test_nvcc_of_another_cuda_major_is_refused():
    with pytest.raises(InstallError, match=r'nvcc is CUDA 13\.0, torch was built with CUDA 12\.4'
                                           r'.*CUDA_HOME.*MMCV_WITH_CUDA=0'):
        plan_mod.plan_mmcv_build(facts(**dict(GPU, nvcc='13.0')))
    # a minor difference builds (torch only warns)
    assert plan_mod.plan_mmcv_build(facts(**dict(GPU, nvcc='12.6'))).ops == 'cuda'


def test_bad_mmcv_with_cuda_is_refused():
    with pytest.raises(InstallError, match="MMCV_WITH_CUDA='yes'"):
        plan_mod.plan_mmcv_build(facts(**CPU, env={'MMCV_WITH_CUDA': 'yes'}))


# -- the wheel cache -------------------------------------------------------
def key(**kw) -> str:
    f = facts(**kw)
    return plan_mod.cache_key(f, plan_mod.plan_mmcv_build(f))


def test_cache_key_names_python_torch_cuda_and_ops():
    assert key(**CPU) == 'py3.11_torch2.13.0+cpu_cuda-none_ops-cpu'
    assert key(**GPU) == 'py3.12_torch2.6.0+cu124_cuda12.4_ops-cuda12.4-sm8.0'
    assert key(**GPU, env={'TORCH_CUDA_ARCH_LIST': '8.0;9.0+PTX'}) == \
        'py3.12_torch2.6.0+cu124_cuda12.4_ops-cuda12.4-sm8.0-9.0+PTX'
    assert key(**GPU, env={'MMCV_WITH_CUDA': '0'}) == 'py3.12_torch2.6.0+cu124_cuda12.4_ops-cpu'


def test_cache_key_changes_with_each_fact():
    variants = [GPU, dict(GPU, python=(3, 11)), dict(GPU, torch='2.7.0+cu124'),
                dict(GPU, torch_cuda='12.6', nvcc='12.6'), dict(GPU, nvcc='12.6'),
                dict(GPU, gpus=('9.0', )), dict(GPU, nvcc=None)]
    keys = [key(**v) for v in variants]
    assert len(set(keys)) == len(keys), keys
    assert all('/' not in k and ';' not in k and ' ' not in k for k in keys)


WHEEL = 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'


def make_plan(f, files, installed=None):
    """The plan with a fake cache (``files``: folder -> names) and installed
    versions (everything pinned is there except what ``installed`` says)."""
    reqs = [('torch', 'torch==2.13.0', False), ('mmcv', 'mmcv==2.1.0', False),
            ('mmdet', 'mmdet==3.3.0', False), ('numpy', 'numpy==2.4.6', False),
            ('albucore', 'albucore==0.0.24', True)]
    have = dict(torch=f.torch, mmcv='2.1.0', mmdet='3.3.0', numpy='2.4.6', albucore='0.0.24')
    have.update(installed or {})
    return plan_mod.make_plan(f, reqs, '/cache', lambda d: files.get(d, []), have.get, None)


def test_cached_wheel_of_the_key_is_used():
    f = facts(**CPU)
    folder = '/cache/' + key(**CPU)
    plan = make_plan(f, {folder: [WHEEL, 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl'],
                         '/cache': [WHEEL]})
    assert [k for k, _, _ in plan.todo] == ['mmcv']  # installed without ops (mmcv_ops None)
    assert plan.cache_dir == folder and plan.wheel == f'{folder}/{WHEEL}'
    assert plan.legacy_wheel == ''


def test_flat_layout_wheel_is_adopted_for_the_torch_it_was_built_against():
    plan = make_plan(facts(**CPU), {'/cache': [WHEEL, 'mmcv-2.1.0-cp310-cp310-x.whl']})
    assert plan.wheel == '' and plan.legacy_wheel == f'/cache/{WHEEL}'
    # ... and for no other torch, CUDA build or ops
    for other in (dict(CPU, torch='2.6.0+cpu'),
                  dict(CPU, torch='2.13.0+cu126', torch_cuda='12.6', nvcc='12.6')):
        plan = make_plan(facts(**other), {'/cache': [WHEEL]})
        assert plan.wheel == plan.legacy_wheel == '', other
    # a wheel for another Python is no candidate
    assert make_plan(facts(**dict(CPU, python=(3, 12))), {'/cache': [WHEEL]}).legacy_wheel == ''


def test_mmcv_is_reinstalled_when_its_ops_do_not_fit():
    ok = make_plan(facts(**CPU, mmcv_ops='cpu'), {})
    assert ok.todo == []
    broken = make_plan(facts(**CPU, mmcv_ops='broken: ImportError: undefined symbol'), {})
    assert broken.todo == [('mmcv', 'mmcv==2.1.0', 'its compiled ops do not load with torch '
                            '2.13.0+cpu: ImportError: undefined symbol')]
    want_cuda = make_plan(facts(**GPU, mmcv_ops='cpu'), {})
    assert want_cuda.todo == [('mmcv', 'mmcv==2.1.0',
                               'installed with CPU ops only, CUDA ops wanted')]
    # CUDA ops where CPU ops would do are kept
    assert make_plan(facts(**CPU, mmcv_ops='cuda12.4'), {}).todo == []


def test_unmet_requirements_never_touch_torch():
    plan = make_plan(facts(**CPU, mmcv_ops='cpu'), {},
                     installed=dict(numpy='1.26.0', albucore=None, mmdet=None))
    assert plan.todo == [('mmdet', 'mmdet==3.3.0', 'missing'),
                         ('pip', 'numpy==2.4.6', 'found 1.26.0'),
                         ('nodeps', 'albucore==0.0.24', 'missing')]


def test_missing_torch_defers_the_rest():
    plan = make_plan(facts(python=(3, 11)), {'/cache': [WHEEL]})
    assert plan.torch.action == 'install' and plan.build is None and plan.todo == []


def test_shell_output_is_the_bash_install_sh_evaluates():
    plan = make_plan(facts(**CPU, mmcv_ops='broken: it\'s "odd" $(x)'), {},
                     installed=dict(numpy=None, albucore=None))
    script = plan_mod.shell(plan) + '\nprintf "%s|" "${PIP_REQS[@]}" "${NODEPS_REQS[@]}" ' \
        '"${MMCV_BUILD_ENV[@]}" "$TORCH_CONSTRAINT" "$NEED_MMCV" "$NEED_MMDET"; echo; echo "$TODO"'
    out = subprocess.run(['bash', '-c', script], capture_output=True, text=True, check=True).stdout
    first, *todo = out.splitlines()
    assert first == ('numpy==2.4.6|albucore==0.0.24|MMCV_WITH_OPS=1|FORCE_CUDA=0|'
                     'CUDA_VISIBLE_DEVICES=|torch==2.13.0+cpu|1||')
    assert todo[0] == ('mmcv mmcv==2.1.0 (its compiled ops do not load with torch 2.13.0+cpu: '
                       'it\'s "odd" $(x))')


def test_refusal_is_an_error_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(plan_mod, 'gather_facts',
                        lambda: Facts(python=(3, 11), torch='2.3.1', pinned_torch='2.13.0'))
    assert plan_mod.main(['--shell']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: torch 2.3.1 is installed; rtdetr_mm is tested with torch '
                          '2.4 to 2.13.x')


def test_dry_run_on_this_environment_keeps_torch(tmp_path):
    """``INSTALL_DRY_RUN=1 bash tools/install.sh``: the plan for this
    environment (complete after make install) keeps its torch and changes
    nothing (an empty cache folder stays empty)."""
    env = dict(os.environ, INSTALL_DRY_RUN="1", RTDETR_MM_WHEEL_CACHE=str(tmp_path),
               PYTHON=sys.executable)
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools/install.sh')], env=env, cwd='/',
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'[install] torch: keep {torch.__version__}: ' in proc.stdout
    assert f'[install] wheel cache: {tmp_path}/py' in proc.stdout
    assert list(tmp_path.iterdir()) == []
