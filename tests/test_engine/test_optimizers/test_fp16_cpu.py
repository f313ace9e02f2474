"""USE_FP16 without a GPU: ``RTDETRv2AmpOptimWrapper(dtype='float16',
allow_cpu_fp16=True)`` runs fp16 autocast with a real dynamic
``torch.amp.GradScaler('cpu')`` (issue 11, item 4).

- An inf/NaN gradient of a finite loss skips the optimizer step (weights and
  optimizer state bit-identical) and multiplies the scale by the scaler's
  backoff factor (0.5); it is the scaler's business, not an error: a run
  through ``tools/train.py`` with one such step goes on (the non-finite-loss
  hook, whose default action stops the run, is not involved).
- The scaler's state is in the checkpoint and a resumed run continues it
  bit-exact (as ``tests/test_engine/test_resume_exact.py`` for fp32).
- A few fp16 steps stay close to fp32 (tolerances in
  :func:`test_fp16_steps_stay_close_to_fp32`).
- Without ``allow_cpu_fp16`` fp16 on the CPU is refused, naming the key.

The runs go through ``tools/train.py``'s ``main`` in this process, on the
tiny COCO set (64x64, 8 images, batch 2: 4 iterations an epoch) with the
small RT-DETRv2 of ``tiny_config`` and its backbone frozen
(``freeze_at=4``). NOTE: the frozen backbone keeps the tests fast: CPU fp16
convolution backward is emulated and the backbone's dominates an
iteration; the neck and the head (the parameters trained here) go through
the same scaler path. The inf gradient is injected by ``_Fp16ProbeHook``
with a tensor hook on one weight's gradient (``Tensor.register_hook``):
between the backward and the step, with a finite loss. ``init_scale=256``:
at GradScaler's default 65536 the first steps of this model overflow by
themselves (the scaler backs off until they fit), so the injected
overflow would not be the only one.
"""
import glob
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from rtdetr_mm.engine.checkpoint_safety import safe_load_checkpoint
from rtdetr_mm.engine.optimizers import RTDETRv2AmpOptimWrapper
from rtdetr_mm.testing.asserts import assert_same
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
INIT_SCALE = 256.0
BACKOFF = 0.5  # torch.amp.GradScaler's default backoff_factor
PROBED = 'bbox_head.enc_score_head.weight'  # the weight whose gradient turns inf
FP16 = ['optim_wrapper.type=RTDETRv2AmpOptimWrapper', 'optim_wrapper.dtype=float16',
        'optim_wrapper.allow_cpu_fp16=True', f'optim_wrapper.init_scale={INIT_SCALE}']


@HOOKS.register_module(force=True)
class _Fp16ProbeHook(Hook):
    """Turns the gradient of ``PROBED`` into inf in iteration ``inject_at``
    (1-based; 0: never) and records, per iteration: the loss, the loss scale
    after the step (None without a scaler), the wrapper's flags and whether
    the trainable parameters changed. Records go to :attr:`records`, the
    parameters the run starts from to :attr:`initial`."""
    records = []
    initial = {}

    def __init__(self, inject_at: int = 0) -> None:
        self.inject_at = inject_at
        self._inject_now = False
        self._before = None

    def before_train(self, runner) -> None:
        _Fp16ProbeHook.initial = {n: p.detach().clone()
                                  for n, p in runner.model.named_parameters()}
        weight = dict(runner.model.named_parameters())[PROBED]
        weight.register_hook(
            lambda grad: torch.full_like(grad, float('inf')) if self._inject_now else grad)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._inject_now = runner.iter + 1 == self.inject_at
        self._before = {n: p.detach().clone() for n, p in runner.model.named_parameters()
                        if p.requires_grad}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        wrapper = runner.optim_wrapper
        scaler = getattr(wrapper, 'loss_scaler', None)
        params = dict(runner.model.named_parameters())
        _Fp16ProbeHook.records.append(dict(
            iter=runner.iter + 1, injected=self._inject_now, loss=outputs['loss'].item(),
            scale=scaler.get_scale() if scaler is not None else None,
            overflowed=getattr(wrapper, 'last_step_overflowed', False),
            skipped=wrapper.last_step_skipped,
            changed=[n for n, p in self._before.items() if not torch.equal(p, params[n])]))


# no validation (not what is tested here)
EXTRA = '''
randomness = dict(seed=0)
model['backbone'] = dict(freeze_at=4)
custom_hooks = [dict(type='_Fp16ProbeHook', inject_at=0)]
train_cfg = dict(max_epochs=2, val_interval=100)
val_dataloader, val_cfg, val_evaluator = None, None, None
'''
# plain SGD, no clipping: the weight change is lr x the sum of the gradients
SGD = "optim_wrapper = dict(clip_grad=None, optimizer=dict(_delete_=True, type='SGD', lr=1e-4))"



@pytest.fixture(scope='module')
def train():
    return load_tool('train')


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    return tmp_path_factory.mktemp('fp16')


@pytest.fixture(scope='module')
def data(base):
    return make_tiny_coco(str(base / 'data'), num_images=8, size=(64, 64))


@pytest.fixture(scope='module')
def config(base, data):
    return tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), max_epochs=2,
                       batch_size=2, small_model=True, extra=EXTRA)


def _run(train, argv):
    """tools/train.py main; (exit status, the probe's records)."""
    _Fp16ProbeHook.records, _Fp16ProbeHook.initial = [], {}
    status = train.main(argv)
    return status, list(_Fp16ProbeHook.records)


@pytest.fixture(scope='module')
def uninterrupted(train, config, base):
    """2 epochs (8 iterations) of fp16, inf gradient in iteration 2."""
    work_dir = str(base / 'a')
    status, records = _run(train, [config, '--work-dir', work_dir, '--cfg-options', *FP16,
                                   'custom_hooks.0.inject_at=2'])
    return status, records, work_dir


# -------------------------------------------------- the wrapper on its own
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


@pytest.mark.parametrize('bad', [float('inf'), float('nan')], ids=['inf', 'nan'])
@pytest.mark.parametrize('clip', [None, dict(max_norm=0.1)], ids=['no_clip', 'clip'])
def test_nonfinite_gradient_skips_the_step_and_backs_off_the_scale(bad, clip):
    torch.manual_seed(0)
    model = _Tiny()
    wrapper = RTDETRv2AmpOptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-2),
                                      dtype='float16', allow_cpu_fp16=True,
                                      init_scale=INIT_SCALE, clip_grad=clip)
    x = torch.rand(3, 4)

    def update(corrupt=False):
        with wrapper.optim_context(model):
            out = model(x)
        assert out.dtype == torch.float16  # the forward really ran in fp16
        loss = out.float().square().mean()
        handle = model.fc1.weight.register_hook(  # the loss stays finite, one gradient not
            lambda g: g.index_put((torch.tensor([0]),) * 2, torch.tensor(bad, dtype=g.dtype))
        ) if corrupt else None
        wrapper.update_params(loss)
        if handle is not None:
            handle.remove()
        return loss

    update()  # a normal step first: the optimizer has state to keep
    assert wrapper.loss_scaler.get_scale() == INIT_SCALE and not wrapper.last_step_overflowed
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optim_state = {i: {k: v.clone() for k, v in s.items()}
                   for i, s in enumerate(wrapper.optimizer.state.values())}

    loss = update(corrupt=True)
    assert torch.isfinite(loss)
    assert wrapper.last_step_overflowed and not wrapper.last_step_skipped
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key  # bit-identical
    for i, state in enumerate(wrapper.optimizer.state.values()):
        for key, value in state.items():
            assert torch.equal(value, optim_state[i][key]), (i, key)  # step count included
    assert wrapper.loss_scaler.get_backoff_factor() == BACKOFF
    assert wrapper.loss_scaler.get_scale() == INIT_SCALE * BACKOFF
    assert wrapper.state_dict()['loss_scaler']['_growth_tracker'] == 0

    update()  # the next finite step steps again, at the lowered scale
    assert not wrapper.last_step_overflowed
    assert not torch.equal(model.fc1.weight, weights['fc1.weight'])
    assert wrapper.loss_scaler.get_scale() == INIT_SCALE * BACKOFF


# ------------------------------------------------------ through train.py
def test_run_with_an_inf_gradient_goes_on(uninterrupted):
    status, records, work_dir = uninterrupted
    assert status == 0
    assert [r['iter'] for r in records] == list(range(1, 9))
    for r in records:
        assert torch.isfinite(torch.tensor(r['loss'])) and not r['skipped'], r
        if r['injected']:  # iteration 2: no parameter moved, the scale halved
            assert r['iter'] == 2 and r['overflowed'] and r['changed'] == [], r
        else:
            assert not r['overflowed'] and PROBED in r['changed'], r
    assert [r['scale'] for r in records] == [INIT_SCALE] + [INIT_SCALE * BACKOFF] * 7
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_2.pth')
    logs = glob.glob(osp.join(work_dir, '*', '*.log'))
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        log = f.read()
    assert 'mixed precision: float16 autocast on cpu, dynamic loss scaling' in log
    assert (f'fp16: inf/NaN gradients at loss scale {INIT_SCALE:g}: optimizer step skipped, '
            f'loss scale lowered to {INIT_SCALE * BACKOFF:g}') in log
    assert 'non-finite loss' not in log


def test_scaler_state_is_saved_and_resumed_bit_exact(uninterrupted, train, config, base):
    status, _, work_a = uninterrupted
    assert status == 0
    work_b = str(base / 'b')
    # B: the same first epoch, then a new runner resumes from epoch_1.pth
    status, _ = _run(train, [config, '--work-dir', work_b, '--cfg-options', *FP16,
                             'custom_hooks.0.inject_at=2', 'train_cfg.max_epochs=1'])
    assert status == 0
    status, resumed = _run(train, [config, '--work-dir', work_b, '--resume', '--cfg-options',
                                   *FP16, 'randomness.seed=None'])
    assert status == 0 and [r['iter'] for r in resumed] == [5, 6, 7, 8]

    a1 = safe_load_checkpoint(osp.join(work_a, 'epoch_1.pth'))
    b1 = safe_load_checkpoint(osp.join(work_b, 'epoch_1.pth'))
    # saved: the backed-off scale, 2 good steps since (iterations 3 and 4)
    assert a1['optimizer']['loss_scaler'] == dict(
        scale=INIT_SCALE * BACKOFF, growth_factor=2.0, backoff_factor=BACKOFF,
        growth_interval=2000, _growth_tracker=2)
    assert_same(a1['optimizer'], b1['optimizer'], 'epoch_1 optimizer')
    # the resumed run went on from the saved scale, not a fresh scaler's
    assert [r['scale'] for r in resumed] == [INIT_SCALE * BACKOFF] * 4

    a2 = safe_load_checkpoint(osp.join(work_a, 'epoch_2.pth'))
    b2 = safe_load_checkpoint(osp.join(work_b, 'epoch_2.pth'))
    assert a2['meta']['iter'] == b2['meta']['iter'] == 8
    assert a2['optimizer']['loss_scaler']['_growth_tracker'] == 6
    assert_same(a2['state_dict'], b2['state_dict'], 'state_dict')
    assert_same(a2['optimizer'], b2['optimizer'], 'optimizer')  # loss_scaler included
    assert_same(a2['param_schedulers'], b2['param_schedulers'], 'param_schedulers')
    assert_same(a2['rng_state'], b2['rng_state'], 'rng_state')


def test_fp16_steps_stay_close_to_fp32(train, data, base):
    """4 steps (1 epoch) from the same weights on the same batches (same
    seed: the same images, flips, denoising queries), fp16 with loss scaling
    (256, no overflow) vs fp32, with plain SGD and no gradient clipping: the
    weight change is then lr x the sum of the 4 (unscaled) gradients, so it
    measures the fp16 gradients themselves. (AdamW and clipping normalise
    the update: they would hide a wrong gradient magnitude, a missing
    unscale included.)

    Tolerances (this model and data: losses <= 2.5e-4 relative apart,
    cosine 0.985, norm ratio 0.95):

    - each loss within 1e-3 relative: twice fp16's unit roundoff (2^-11 ~
      4.9e-4); the forward runs in fp16, the losses are summed in fp32.
    - the weight change: cosine similarity >= 0.95 and norm ratio in
      [0.85, 1.15]. Gradients go back through every fp16 layer, each adding
      ~5e-4 relative error, and many entries are sums of terms that nearly
      cancel, so their relative error is much larger; these bounds are ~3x
      the deviation observed, far from what a wrong scale (x256) or a
      skipped step (changes 0) gives.
    """
    config = tiny_config(str(base / 'cfg_sgd.py'), R18, data, size=(64, 64), max_epochs=1,
                         batch_size=2, small_model=True, extra=EXTRA + SGD)
    runs = {}
    for name, options in (('fp32', []), ('fp16', FP16)):
        work_dir = str(base / name)
        status, records = _run(train, [config, '--work-dir', work_dir, '--cfg-options',
                                       'train_cfg.max_epochs=1', *options])
        assert status == 0
        final = safe_load_checkpoint(osp.join(work_dir, 'epoch_1.pth'))['state_dict']
        runs[name] = (records, dict(_Fp16ProbeHook.initial), final)
    (rec32, init32, final32), (rec16, init16, final16) = runs['fp32'], runs['fp16']
    assert [r['scale'] for r in rec16] == [INIT_SCALE] * 4  # no step skipped
    assert [r['scale'] for r in rec32] == [None] * 4  # fp32: no scaler
    for r32, r16 in zip(rec32, rec16):
        assert r16['loss'] == pytest.approx(r32['loss'], rel=1e-3), (r32, r16)

    trainable = [k for k in init32 if not k.startswith('backbone.')]
    assert PROBED in trainable
    assert_same(init32, init16, 'initial weights')
    d32 = torch.cat([(final32[k] - init32[k]).flatten() for k in trainable])
    d16 = torch.cat([(final16[k] - init16[k]).flatten() for k in trainable])
    assert d32.norm() > 0
    cosine = torch.nn.functional.cosine_similarity(d32, d16, dim=0).item()
    ratio = (d16.norm() / d32.norm()).item()
    assert cosine >= 0.95 and 0.85 <= ratio <= 1.15, (cosine, ratio)


# --------------------------------------------------------------- refusal
def test_fp16_on_cpu_without_the_opt_in_is_refused_naming_the_key(train, config, base, capsys):
    capsys.readouterr()
    status = train.main([config, '--work-dir', str(base / 'refused'), '--cfg-options',
                         'optim_wrapper.type=RTDETRv2AmpOptimWrapper',
                         'optim_wrapper.dtype=float16'])
    err = capsys.readouterr().err
    err = err[err.rindex('error: '):] if 'error: ' in err else err
    assert status == 1, err
    assert 'Traceback' not in err
    assert "optim_wrapper.dtype='float16' needs a CUDA device, the model is on cpu" in err
    assert 'optim_wrapper.allow_cpu_fp16=True' in err
    assert "dtype='bfloat16'" in err
    assert not osp.exists(osp.join(str(base / 'refused'), 'epoch_1.pth'))
