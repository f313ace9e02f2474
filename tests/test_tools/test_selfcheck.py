"""tools/misc/selfcheck.py (issue 15, item 3): the CPU run passes (exit 0,
every item PASS or SKIP with a reason, the JSON report lists them with
their numbers), a NaN injected into the fp16 steps is named FAIL with exit
1, and bad options are refused. ``--quick`` (128² / 64² images, 2 steps,
a small model with a frozen backbone) keeps it short; the default (r18vd,
640², 3 steps) is what ``make selfcheck`` runs."""
import importlib.metadata as md
import json
import math

import pytest
import torch

from rtdetr_mm.engine.optimizers import RTDETRv2AmpOptimWrapper
from rtdetr_mm.testing.selfcheck import BOX_TOL, ITEMS, SCORE_TOL
from rtdetr_mm.testing.tools import load_tool

selfcheck = load_tool('misc/selfcheck')


@pytest.fixture(scope='module')
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('selfcheck') / 'report.json'
    code = selfcheck.main(['--device', 'cpu', '--quick', '--out', str(out)])
    with open(out) as f:
        report = json.load(f)
    return code, report, {item['name']: item for item in report['items']}


def test_cpu_run_passes_and_reports_every_item(cpu_run):
    code, report, items = cpu_run
    bad = {n: (i['status'], i['reason']) for n, i in items.items() if i['status'] not in
           ('PASS', 'SKIP')}
    assert code == 0 and not bad, bad
    assert [i['name'] for i in report['items']] == list(ITEMS)
    assert report['status'] == 'PASS' and report['failed'] == [] and report['device'] == 'cpu'
    assert all(i['reason'] for i in report['items'])
    assert [n for n, i in items.items() if i['status'] == 'SKIP'] == ['agreement']
    assert 'the device is the CPU' in items['agreement']['reason']


def test_versions_are_the_installed_ones(cpu_run):
    from mmcv.ops import get_compiling_cuda_version
    details = cpu_run[2]['versions']['details']
    assert details['torch'] == torch.__version__
    for name in ('mmcv', 'mmengine', 'mmdet', 'transformers'):
        assert details[name] == md.version(name), name
    compiled = get_compiling_cuda_version()
    assert details['mmcv_ops_cuda'] == ('none' if compiled == 'not available' else compiled)


def test_training_items_report_finite_numbers(cpu_run):
    items = cpu_run[2]
    assert items['forward_backward']['details']['input'] == [2, 3, 128, 128]
    for name, wrapper in (('steps_fp32', 'RTDETRv2OptimWrapper'),
                          ('steps_bf16', 'RTDETRv2AmpOptimWrapper'),
                          ('steps_fp16', 'RTDETRv2AmpOptimWrapper')):
        details = items[name]['details']
        assert details['wrapper'] == wrapper and details['input'] == [2, 3, 64, 64]
        assert len(details['losses']) == 2 and all(map(math.isfinite, details['losses']))
    fp16 = items['steps_fp16']['details']
    assert fp16['autocast'] == 'float16' and fp16['loss_scale'] > 0
    assert items['steps_bf16']['details']['autocast'] == 'bfloat16'
    sync = items['sync_bn']['details']
    assert sync['backend'] == 'gloo' and sync['converted'] > 0
    assert sync['wrapper'] == 'CPUDistributedDataParallel'
    assert sync['bn_updated'] == sync['bn_trainable'] > 0
    train = items['train_tool']['details']
    assert train['exit_code'] == 0 and len(train['train_losses']) == 2
    assert len(train['bbox_mAP']) == 1 and 'bfloat16 autocast on cpu' in train['amp'][0]


def test_onnx_and_throughput_items(cpu_run):
    items = cpu_run[2]
    onnx = items['onnx']['details']
    assert onnx['count_mismatches'] == 0 and onnx['matched'] > 0
    assert onnx['max_score_diff'] <= SCORE_TOL and onnx['max_box_diff'] <= BOX_TOL
    speed = items['throughput']['details']
    for key in ('train_fp32_img_per_s', 'train_bf16_img_per_s', 'train_fp16_img_per_s',
                'infer_fp32_img_per_s'):
        assert speed[key] > 0, key


def test_nan_in_fp16_is_named_fail_and_exit_1(monkeypatch, capsys, tmp_path):
    """fp16's loss turned NaN inside the optim wrapper (where an fp16
    overflow in the forward would show): the fp16 item FAILs naming the
    step, bf16 still passes, the exit status is 1."""
    original = RTDETRv2AmpOptimWrapper.update_params

    def nan_in_fp16(self, loss, *args, **kwargs):
        if self.cast_dtype is torch.float16:
            loss = loss * float('nan')
        return original(self, loss, *args, **kwargs)

    monkeypatch.setattr(RTDETRv2AmpOptimWrapper, 'update_params', nan_in_fp16)
    out = tmp_path / 'report.json'
    code = selfcheck.main(['--device', 'cpu', '--quick', '--only', 'steps_bf16', 'steps_fp16',
                           '--out', str(out)])
    assert code == 1
    report = json.loads(out.read_text())
    status = {i['name']: (i['status'], i['reason']) for i in report['items']}
    assert status['steps_bf16'][0] == 'PASS'
    assert status['steps_fp16'] == ('FAIL', 'step 1: the optim wrapper found a non-finite '
                                    'loss and skipped backward and step')
    assert report['status'] == 'FAIL' and report['failed'] == ['steps_fp16']
    printed = capsys.readouterr().out
    assert 'FAIL  steps_fp16' in printed and 'failed: steps_fp16' in printed


@pytest.mark.parametrize('argv, message', [
    (['--only', 'versions', 'warp_drive'], 'unknown item(s) warp_drive; the items: versions'),
    (['--size', '100'], 'multiples of 32, got 100'),
])
def test_bad_options_are_refused(argv, message, capsys):
    assert selfcheck.main(['--device', 'cpu', *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a torch without CUDA')
def test_device_cuda_without_cuda_is_refused(capsys):
    assert selfcheck.main(['--device', 'cuda', '--only', 'versions']) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: --device cuda: torch {torch.__version__} cannot use CUDA')
