"""Pieces of ``tools/analysis_tools/benchmark_vs_hf.py``: both RT-DETRv2
implementations with the same weights, their inputs, one step of each
(inference / training, fp32 / bf16), interleaved timing, peak memory, FLOPs
and the per-stage profile breakdown.

``ours`` is rtdetr_mm's detector (mmdet ``model.loss`` / ``model.predict``),
``hf`` is transformers' ``RTDetrV2ForObjectDetection`` (``model(pixel_values,
labels)``; inference adds the image processor's top-k post-processing, as
our ``predict`` decodes its detections).
"""
import contextlib
import os.path as osp
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.profiler import record_function

from . import ROOT

IMPLS = ('ours', 'hf')
#: Profile stages, in display order; ``other`` is the step minus the rest.
STAGES = ('backbone', 'encoder', 'query_selection', 'denoising', 'decoder', 'matching',
          'loss', 'backward', 'optimizer', 'other')
#: Prefixes of the profiler ranges read as stages (ours are in the head).
RANGE_PREFIXES = ('bench:', 'rtdetr_mm:')


# ---------------------------------------------------------------- models
def build_pair(size: str, device: str, workdir: str,
               with_cp: bool = False) -> Dict[str, torch.nn.Module]:
    """Both implementations of ``size`` with the same weights: transformers'
    (``hf_reference.build_hf_model``) converted to ours by our converter;
    ``with_cp``: ours with activation checkpointing in the backbone and the
    encoder. Leaves ``hf/`` and ``ours.pth`` in ``workdir`` for :func:`load_one`."""
    from rtdetr_mm.converters.rtdetrv2 import load_source
    from .hf_reference import build_hf_model
    hf = build_hf_model(size, seed=0)
    hf.save_pretrained(osp.join(workdir, 'hf'))
    state, _, _ = load_source(osp.join(workdir, 'hf'))
    torch.save(state, osp.join(workdir, 'ours.pth'))
    return dict(ours=_build_ours(size, state, with_cp).to(device), hf=hf.to(device))


def load_one(impl: str, size: str, workdir: str, device: str,
             with_cp: bool = False) -> torch.nn.Module:
    """One implementation from what :func:`build_pair` left in ``workdir``."""
    if impl == 'hf':
        from transformers import RTDetrV2ForObjectDetection
        return RTDetrV2ForObjectDetection.from_pretrained(osp.join(workdir, 'hf')).to(device)
    state = torch.load(osp.join(workdir, 'ours.pth'), weights_only=True)
    return _build_ours(size, state, with_cp).to(device)


def _build_ours(size: str, state: dict, with_cp: bool = False) -> torch.nn.Module:
    import rtdetr_mm  # noqa: F401  (registers the modules)
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from .hf_reference import SIZES
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, SIZES[size][2])).model
    cfg.backbone.with_cp = cfg.neck.with_cp = with_cp
    model = MODELS.build(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        print(f'warning: {size}: converted weights: missing {missing[:5]}, '
              f'unexpected {unexpected[:5]}')
    return model


def make_inputs(batch: int, image: int, num_gt: int, device: str, seed: int = 0) -> dict:
    """Images in [0, 1] (B, 3, image, image) and ``num_gt`` random boxes per
    image, as our data samples (xyxy pixels) and transformers' labels
    (cxcywh normalised): the same tensors for both."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, image, image, generator=gen).to(device)
    samples, targets = [], []
    scale = torch.tensor([image] * 4, dtype=torch.float)
    for _ in range(batch):
        xy = torch.rand(num_gt, 2, generator=gen) * image * 0.6
        wh = torch.rand(num_gt, 2, generator=gen) * image * 0.35 + image / 40
        boxes = torch.cat([xy, xy + wh], 1).clamp(max=image)
        labels = torch.randint(0, 80, (num_gt,), generator=gen)
        meta = dict(img_shape=(image, image), batch_input_shape=(image, image),
                    ori_shape=(image, image), scale_factor=(1.0, 1.0))
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=HorizontalBoxes(boxes.to(device)),
                                           labels=labels.to(device))
        samples.append(sample)
        cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        targets.append(dict(class_labels=labels.to(device), boxes=(cxcywh / scale).to(device)))
    return dict(images=images, samples=samples, targets=targets)


# ---------------------------------------------------------------- steps
class Stepper:
    """One implementation's inference call and training step on fixed inputs.

    Args:
        impl: ``'ours'`` or ``'hf'``.
        model: Its model. ``mode`` ``'train'`` puts it in train mode with a
            fresh AdamW; ``'inference'`` in eval mode.
        inputs: :func:`make_inputs`.
        precision: ``'fp32'`` or ``'bf16'`` (autocast around forward + loss).
        compile: Ours only: forward + loss through ``torch.compile(model.loss)``
            (what mmengine's ``compile`` key compiles of a training step;
            backward runs the compiled backward graph).
    """

    def __init__(self, impl: str, model: torch.nn.Module, inputs: dict, mode: str,
                 precision: str = 'fp32', device: str = 'cpu', compile: bool = False) -> None:
        self.impl, self.model, self.inputs, self.mode = impl, model, inputs, mode
        self.device, self.precision = device, precision
        if compile and (impl != 'ours' or mode != 'train'):
            raise ValueError('compile: only our training step')
        self.loss_fn = None  # ours: model.loss, or its compiled form
        if impl == 'ours':
            self.loss_fn = torch.compile(model.loss) if compile else model.loss
        self.labels = False  # profiler ranges around backward / optimizer
        self.optimizer = None
        if mode == 'train':
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=1e-6)
        else:
            model.eval()
            if impl == 'hf':
                from transformers import RTDetrImageProcessor
                self.processor = RTDetrImageProcessor()

    def _autocast(self):
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                              enabled=self.precision == 'bf16')

    def _range(self, name: str):
        return record_function(f'bench:{name}') if self.labels else contextlib.nullcontext()

    def __call__(self) -> None:
        """One inference call or one full training step."""
        if self.mode == 'inference':
            self.infer()
        else:
            self.backward(self.forward_loss())
            self.optimizer_step()

    def infer(self):
        images = self.inputs['images']
        with torch.inference_mode(), self._autocast():
            if self.impl == 'ours':
                return self.model.predict(images, self.inputs['samples'])
            out = self.model(pixel_values=images)
            sizes = [tuple(images.shape[-2:])] * len(images)
            return self.processor.post_process_object_detection(out, threshold=0.0,
                                                                 target_sizes=sizes)

    def forward_loss(self) -> torch.Tensor:
        images = self.inputs['images']
        with self._autocast():
            if self.impl == 'hf':
                return self.model(pixel_values=images, labels=self.inputs['targets']).loss
            losses = self.loss_fn(images, self.inputs['samples'])
        return sum(sum(v) if isinstance(v, (list, tuple)) else v
                   for k, v in losses.items() if 'loss' in k)

    def backward(self, loss: torch.Tensor) -> None:
        with self._range('backward'):
            loss.backward()

    def optimizer_step(self) -> None:
        with self._range('optimizer'):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def synchronize(device: str) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def interleaved_medians(steps: Dict[str, Callable], repeats: int, device: str) -> Dict[str, float]:
    """Median seconds of each step, run in turns (one warm-up each, then
    a, b, a, b, ...) so that machine noise hits all of them alike."""
    times = defaultdict(list)
    for step in steps.values():
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            t0 = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------- memory, counts, FLOPs
def _status_kb(key: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ':'))


def peak_train_memory_mb(stepper: Stepper, steps: int = 2) -> float:
    """CUDA: ``max_memory_allocated`` over ``steps`` training steps; CPU: the
    peak RSS growth over the RSS before them (the high-water mark is reset
    through ``/proc/self/clear_refs``)."""
    if torch.device(stepper.device).type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            stepper()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current RSS
    base = _status_kb('VmRSS')
    for _ in range(steps):
        stepper()
    return (_status_kb('VmHWM') - base) / 1024


def count_train_step(stepper: Stepper) -> dict:
    """Host syncs and aten ops of forward + loss + backward, and of the
    optimizer step (``rtdetr_mm.testing.op_counter``)."""
    from .op_counter import HostSyncCounter
    with HostSyncCounter() as fwd_bwd:
        stepper.backward(stepper.forward_loss())
    with HostSyncCounter() as opt:
        stepper.optimizer_step()
    return dict(fwd_bwd_syncs=fwd_bwd.total, fwd_bwd_ops=fwd_bwd.aten_ops,
                opt_syncs=opt.total, opt_ops=opt.aten_ops,
                sync_kinds=';'.join(f'{k}:{v}' for k, v in sorted(fwd_bwd.syncs.items())),
                opt_sync_kinds=';'.join(f'{k}:{v}' for k, v in sorted(opt.syncs.items())))


def forward_flops(stepper: Stepper) -> int:
    """FLOPs of one inference call (``torch.utils.flop_counter``: matrix
    multiplies and convolutions; grid_sample and element-wise ops are not
    counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        stepper.infer()
    return counter.get_total_flops()


def mm_peak_flops(dtype: torch.dtype, n: int, device: str, repeats: int = 5) -> float:
    """Best FLOP/s of an ``n x n`` ``torch.mm`` in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float('inf')
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ---------------------------------------------------------------- profile
def stage_modules(impl: str, model: torch.nn.Module) -> List[Tuple[str, torch.nn.Module]]:
    """(stage, module) pairs whose forward is a stage. Ours: the backbone and
    the neck (of the fused copy in eval mode); the head labels its own
    regions. transformers': backbone, input projections + hybrid encoder,
    the query-selection heads (its top-k/gather stay in ``other``), decoder."""
    if impl == 'ours':
        net = model if model.training else model.inference_model()
        return [('backbone', net.backbone), ('encoder', net.neck)]
    m = model.model
    return ([('backbone', m.backbone)] + [('encoder', p) for p in m.encoder_input_proj]
            + [('encoder', m.encoder)]
            + [('query_selection', mod) for mod in (m.enc_output, m.enc_score_head,
                                                    m.enc_bbox_head)]
            + [('decoder', m.decoder)])


@contextlib.contextmanager
def stage_ranges(impl: str, model: torch.nn.Module):
    """Profiler ranges ``bench:<stage>`` around the stages' forwards (hooks;
    neither model's code is changed). transformers' loss function, its
    Hungarian matcher (a global module hook on its class) and its denoising
    group function are wrapped too, and restored on exit."""
    handles, stack = [], []

    def opener(name):
        def pre(module, args):
            stack.append(record_function(f'bench:{name}').__enter__())
        return pre

    def close(module, args, output):
        stack.pop().__exit__(None, None, None)

    for name, module in stage_modules(impl, model):
        handles += [module.register_forward_pre_hook(opener(name)),
                    module.register_forward_hook(close)]
    with contextlib.ExitStack() as restore:
        if impl == 'hf':
            _wrap_hf(model, handles, opener, close, restore)
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _wrap_hf(model, handles, opener, close, restore) -> None:
    from torch.nn.modules.module import (register_module_forward_hook,
                                         register_module_forward_pre_hook)
    from transformers.models.rt_detr_v2 import modeling_rt_detr_v2 as modeling

    def only_matcher(hook):
        def hook_if_matcher(module, *args):
            if type(module).__name__.endswith('HungarianMatcher'):
                hook(module, *args)
        return hook_if_matcher

    handles += [register_module_forward_pre_hook(only_matcher(opener('matching'))),
                register_module_forward_hook(only_matcher(close))]
    loss_fn, dn_fn = model.loss_function, modeling.get_contrastive_denoising_training_group
    model.loss_function = _labelled('bench:loss', loss_fn)
    modeling.get_contrastive_denoising_training_group = _labelled('bench:denoising', dn_fn)
    restore.callback(setattr, modeling, 'get_contrastive_denoising_training_group', dn_fn)
    restore.callback(setattr, model, 'loss_function', loss_fn)


def _labelled(name: str, fn: Callable) -> Callable:
    def labelled(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)
    return labelled


def profile_step(stepper: Stepper, steps: int = 1) -> Dict[str, float]:
    """Milliseconds per step of each stage (``STAGES``) and ``total``, from
    ``torch.profiler`` ranges: a range's time excludes the stage ranges
    nested in it (ours' matching inside its loss, say), so the stages
    partition the step and ``other`` is the unlabelled rest."""
    from torch.profiler import ProfilerActivity, profile
    stepper()  # warm-up
    stepper.labels = True
    with stage_ranges(stepper.impl, stepper.model), \
            profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function('bench:step'):
                stepper()
            synchronize(stepper.device)
    stepper.labels = False
    return stage_times(prof.events(), steps)


def stage_times(events, steps: int = 1) -> Dict[str, float]:
    def stage(event) -> Optional[str]:
        for prefix in RANGE_PREFIXES:
            if event.name.startswith(prefix):
                return event.name[len(prefix):]
        return None

    ms, total = defaultdict(float), 0.0
    for event in events:
        name = stage(event)
        if name is None:
            continue
        if name == 'step':
            total += event.cpu_time_total / 1e3
            continue
        ms[name] += event.cpu_time_total / 1e3
        parent = event.cpu_parent
        while parent is not None and stage(parent) is None:
            parent = parent.cpu_parent
        if parent is not None and stage(parent) != 'step':
            ms[stage(parent)] -= event.cpu_time_total / 1e3
    ms['other'] = total - sum(ms.values())
    out = {name: value / steps for name, value in ms.items()}
    out['total'] = total / steps
    return out
