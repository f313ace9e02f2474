"""The installation self-check (``tools/misc/selfcheck.py``, ``make selfcheck``):
does this installation train, infer and export on this device?

Each item is PASS, FAIL or SKIP with a reason and its details (numbers,
versions); :func:`run` returns them in :data:`ITEMS` order and the tool
exits 1 on any FAIL. The items, on ``device`` (``'cuda'`` or ``'cpu'``):

- ``versions``: torch, CUDA / cuDNN, mmcv and whether its ops were built with
  CUDA, mmengine, mmdet, transformers, rtdetr_mm; the GPU's name and memory.
  FAIL when ``mmcv.ops`` does not load.
- ``forward_backward``: the r18vd config's model (random weights), batch 2
  at ``size``² (640), training forward and backward through its data
  preprocessor: finite loss and gradients.
- ``steps_fp32`` / ``steps_bf16`` / ``steps_fp16``: ``steps`` (3) optimizer
  steps each, the config's optim wrapper (AdamW, clipping, parameter groups)
  as ``RTDETRv2OptimWrapper`` / ``RTDETRv2AmpOptimWrapper`` (bf16; fp16 with
  dynamic loss scaling, ``allow_cpu_fp16=True`` on the CPU), batch 2 at
  ``step_size``²: every loss finite, no step skipped for a non-finite loss,
  the weights finite and changed. An fp16 step that the loss scaler skips
  (inf gradients of a finite loss, its normal start-up) is reported, not
  failed.
- ``agreement``: the same weights on the device and on the CPU give the
  same detections (scores within 1e-3, boxes within 0.5 px; matched as sets,
  :func:`rtdetr_mm.deployment.onnx_export.compare_detections`), on the
  export tests' small model with realistic weights. SKIP on the CPU.
- ``sync_bn``: the model's BatchNorms converted to ``SyncBatchNorm`` (what
  ``sync_bn='torch'`` does) and one training step through the model wrapper
  a launcher run uses, in a 1-process group: nccl and
  ``MMDistributedDataParallel`` on CUDA; gloo and our
  ``CPUDistributedDataParallel`` on the CPU, which reverts SyncBN (torch's
  SyncBN trains on GPUs only): finite loss, BN statistics updated.
- ``train_tool``: ``tools/train.py --amp`` on a generated COCO set (4 images,
  128², the r18 config): 2 iterations and a validation, exit 0, finite
  losses, a ``coco/bbox_mAP``, the mixed-precision line in the log (fp16 on
  CUDA, bf16 on the CPU: what ``--amp`` picks).
- ``onnx``: the device model exported (``export_onnx``), then onnxruntime
  against the CPU PyTorch model (same tolerances as ``agreement``).
- ``throughput``: images per second of training (the fp32/bf16/fp16 steps
  after the first, at ``step_size``²) and inference (``test_step``, batch 2
  at ``size``²).

NOTE: the steps and SyncBN items run at ``step_size`` (default 640 on CUDA,
160 on the CPU, to keep the CPU run within 3 minutes); on the CPU the fp16
steps freeze the backbone (fp16 convolution backward is emulated there,
about 10x fp32). ``quick`` shrinks sizes and model for the tests.
"""
import copy
import glob
import importlib
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import ROOT

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
ITEMS = ('versions', 'forward_backward', 'steps_fp32', 'steps_bf16', 'steps_fp16',
         'agreement', 'sync_bn', 'train_tool', 'onnx', 'throughput')
PRECISIONS = {'steps_fp32': None, 'steps_bf16': 'bfloat16', 'steps_fp16': 'float16'}
#: device vs CPU (and onnxruntime vs PyTorch): the issue's tolerances
SCORE_TOL, BOX_TOL = 1e-3, 0.5
PASS, FAIL, SKIP = 'PASS', 'FAIL', 'SKIP'


class SelfCheckError(ValueError):
    """A bad option (``--device cuda`` without a GPU, an unknown item)."""


@dataclass
class Result:
    """One item: ``status`` PASS / FAIL / SKIP, why, its numbers."""
    name: str
    status: str
    reason: str
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


@dataclass
class Options:
    """``device`` 'cuda' or 'cpu'; ``size`` the forward/backward and
    inference side (640), ``step_size`` the training steps' (None: 640 on
    CUDA, 160 on the CPU), ``batch`` (2), ``steps`` per precision (3),
    ``work_dir`` for the generated data, train run and ONNX file (None: a
    temporary folder)."""
    device: str
    size: int = 640
    step_size: Optional[int] = None
    batch: int = 2
    steps: int = 3
    work_dir: Optional[str] = None
    quick: bool = False

    def __post_init__(self):
        if self.step_size is None:
            self.step_size = 640 if self.device == 'cuda' else 160


#: ``--quick`` (the tests): small images, 2 steps, and the r18 model shrunk
#: as the tests' small model (64 channels, 1 decoder layer, 20 queries) with
#: its backbone frozen (CPU fp16 convolution backward is emulated and slow)
QUICK = dict(size=128, step_size=64, steps=2)
QUICK_MODEL = dict(
    backbone=dict(freeze_at=4),
    neck=dict(hidden_dim=64, dim_feedforward=128, num_heads=2),
    bbox_head=dict(in_channels=(64, 64, 64), hidden_dim=64, num_heads=2, dim_feedforward=128,
                   num_layers=1, num_queries=20, dn_cfg=dict(num_denoising=10)))


def check_options(opts: Options, only: Sequence[str] = ()) -> None:
    """Refuse what cannot run (:class:`SelfCheckError`)."""
    if opts.device not in ('cuda', 'cpu'):
        raise SelfCheckError(f"--device must be 'cuda' or 'cpu', got {opts.device!r}")
    if opts.device == 'cuda' and not torch.cuda.is_available():
        why = ('it is a CPU build' if torch.version.cuda is None
               else f'it has CUDA {torch.version.cuda} but sees no GPU')
        raise SelfCheckError(f'--device cuda: torch {torch.__version__} cannot use CUDA ({why}); '
                             'run with --device cpu, or install a CUDA build of torch '
                             '(README: "Installing on a GPU machine")')
    for side in (opts.size, opts.step_size):
        if side < 32 or side % 32:
            raise SelfCheckError(f'image sizes must be positive multiples of 32, got {side}')
    unknown = sorted(set(only) - set(ITEMS))
    if unknown:
        raise SelfCheckError(f'unknown item(s) {", ".join(unknown)}; the items: '
                             f'{", ".join(ITEMS)}')


# -- helpers ---------------------------------------------------------------
def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _build_r18(quick: bool = False):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(R18)
    if quick:
        cfg.merge_from_dict(dict(model=QUICK_MODEL))
    return MODELS.build(cfg.model), cfg


def make_batch(batch: int, size: int, seed: int = 0) -> dict:
    """A data batch as the dataloader gives it: ``inputs`` uint8 (3, H, W)
    images (smooth colours and rectangles) and ``data_samples`` with 3-8
    random GT boxes each (xyxy pixels, 80 classes), all on the CPU."""
    from rtdetr_mm.deployment.onnx_export import example_inputs

    from .model_utils import data_samples, random_gts
    images, _ = example_inputs(batch, (size, size), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(3, 9, (batch, ), generator=gen).tolist()
    boxes, labels = random_gts(counts, (size, size), seed=seed)
    return dict(inputs=[(img * 255).round().to(torch.uint8) for img in images],
                data_samples=data_samples(boxes, labels, (size, size)))


def _finite_params(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _mmcv_ops() -> Tuple[Optional[str], Optional[str]]:
    """(the CUDA version mmcv's ops were compiled with, or 'none'; why they
    do not load)."""
    try:
        from mmcv.ops import get_compiling_cuda_version
        version = get_compiling_cuda_version()
    except Exception as e:  # noqa: BLE001 (reported)
        return None, f'{type(e).__name__}: {e}'
    return ('none' if version == 'not available' else version), None


def _version(name: str) -> Optional[str]:
    import importlib.metadata as md
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


class SelfCheck:
    """Runs the items on ``opts.device`` (see the module doc)."""

    def __init__(self, opts: Options, log: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.device = opts.device
        self.log = log
        self._r18 = None
        self._small = None
        self.work_dir: Optional[str] = None  # set by run()
        self.step_times: Dict[str, List[float]] = {}

    # models, built once (CPU), copied per item
    def r18(self):
        if self._r18 is None:
            torch.manual_seed(0)
            self._r18 = _build_r18(self.opts.quick)
        model, cfg = self._r18
        return copy.deepcopy(model), cfg

    def small(self):
        if self._small is None:
            from .export_models import random_model
            torch.manual_seed(0)
            self._small = random_model('default')
        return copy.deepcopy(self._small)

    def run(self, only: Sequence[str] = ()) -> List[Result]:
        results = []
        for name in ITEMS:
            if only and name not in only:
                continue
            start = time.perf_counter()
            try:
                status, reason, details = getattr(self, f'check_{name}')()
            except Exception as e:  # noqa: BLE001 (an item's failure is its FAIL)
                status, reason = FAIL, f'{type(e).__name__}: {e}'
                details = dict(traceback=traceback.format_exc()[-4000:])
            result = Result(name, status, reason, round(time.perf_counter() - start, 2), details)
            self.log(format_result(result))
            results.append(result)
        return results

    # -- items ---------------------------------------------------------------
    def check_versions(self):
        import mmcv
        import mmdet
        import mmengine

        import rtdetr_mm
        cuda_ops, error = _mmcv_ops()
        details = dict(
            python=platform.python_version(), torch=torch.__version__,
            torch_cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            mmcv=mmcv.__version__, mmcv_ops_cuda=cuda_ops, mmengine=mmengine.__version__,
            mmdet=mmdet.__version__, transformers=_version('transformers'),
            onnxruntime=_version('onnxruntime'), rtdetr_mm=rtdetr_mm.__version__,
            rtdetr_mm_path=osp.dirname(rtdetr_mm.__file__))
        if self.device == 'cuda':
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            details.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                           gpu_capability=f'{props.major}.{props.minor}',
                           gpus=torch.cuda.device_count())
        if error:
            return FAIL, f'mmcv.ops does not load: {error} (rerun make install)', details
        reason = (f"torch {details['torch']} (CUDA {details['torch_cuda']}, cuDNN "
                  f"{details['cudnn']}), mmcv {details['mmcv']} (ops CUDA {cuda_ops}), "
                  f"mmengine {details['mmengine']}, mmdet {details['mmdet']}, "
                  f"transformers {details['transformers']}, rtdetr_mm {details['rtdetr_mm']}")
        if self.device == 'cuda':
            reason += f"; {details['gpu']} ({details['gpu_memory_gib']} GiB)"
            if cuda_ops == 'none':
                reason += ('; WARNING: mmcv ops built without CUDA: test_cfg.nms on GPU '
                           'tensors fails (make install with nvcc, see "Installing on a GPU '
                           'machine")')
        return PASS, reason, details

    def check_forward_backward(self):
        model, _ = self.r18()
        model.to(self.device).train()
        batch = make_batch(self.opts.batch, self.opts.size, seed=0)
        if self.device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        _sync(self.device)
        start = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
        _sync(self.device)
        seconds = time.perf_counter() - start
        bad = [n for n, p in model.named_parameters()
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        loss = loss.detach()
        details = dict(loss=float(loss), seconds=round(seconds, 3),
                       input=[self.opts.batch, 3, self.opts.size, self.opts.size])
        if self.device == 'cuda':
            details['peak_memory_mib'] = round(torch.cuda.max_memory_allocated() / 2**20)
        if not bool(torch.isfinite(loss)):
            return FAIL, f'non-finite loss {float(loss)}', details
        if bad:
            return FAIL, f'non-finite gradients in {len(bad)} parameters: {bad[:3]}', details
        return PASS, (f'batch {self.opts.batch} at {self.opts.size}x{self.opts.size}: loss '
                      f'{float(loss):.3f}, gradients finite, {seconds:.2f} s'), details

    def _steps(self, item: str):
        from mmengine.optim import build_optim_wrapper
        dtype = PRECISIONS[item]
        model, cfg = self.r18()
        model.to(self.device).train()
        # NOTE: CPU fp16 convolution backward is emulated (about 10x fp32):
        # there the backbone is frozen, as in tests/test_engine/test_optimizers/
        # test_fp16_cpu.py; the neck and head go through the same scaler path
        frozen = dtype == 'float16' and self.device == 'cpu'
        if frozen:
            model.backbone.requires_grad_(False)
        wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
        if dtype is not None:
            wrapper_cfg.update(type='RTDETRv2AmpOptimWrapper', dtype=dtype,
                               allow_cpu_fp16=self.device == 'cpu')
        wrapper = build_optim_wrapper(model, wrapper_cfg)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        losses, overflowed, times = [], [], []
        for step in range(self.opts.steps):
            batch = make_batch(self.opts.batch, self.opts.step_size, seed=step)
            _sync(self.device)
            start = time.perf_counter()
            log_vars = model.train_step(batch, wrapper)
            _sync(self.device)
            times.append(time.perf_counter() - start)
            loss = float(log_vars['loss'].detach())
            losses.append(loss)
            overflowed.append(bool(getattr(wrapper, 'last_step_overflowed', False)))
            if loss != loss or abs(loss) == float('inf'):
                return FAIL, f'step {step + 1}: non-finite loss {loss}', dict(losses=losses)
            if wrapper.last_step_skipped:
                return FAIL, (f'step {step + 1}: the optim wrapper found a non-finite loss and '
                              'skipped backward and step'), dict(losses=losses)
        self.step_times[item] = times
        scaler = getattr(wrapper, 'loss_scaler', None)
        details = dict(losses=losses, seconds=[round(t, 3) for t in times],
                       wrapper=type(wrapper).__name__, autocast=dtype, backbone_frozen=frozen,
                       input=[self.opts.batch, 3, self.opts.step_size, self.opts.step_size])
        if scaler is not None:
            details.update(loss_scale=scaler.get_scale(), scaler_skipped_steps=sum(overflowed))
        if not _finite_params(model):
            return FAIL, 'non-finite weights after the steps', details
        changed = any(not torch.equal(p.detach(), before[n])
                      for n, p in model.named_parameters() if n in before)
        if not changed and not all(overflowed):
            return FAIL, 'the weights did not change', details
        reason = (f'{self.opts.steps} steps at {self.opts.step_size}x{self.opts.step_size}, '
                  f'losses {", ".join(f"{x:.3f}" for x in losses)}: finite')
        if frozen:
            reason += ' (backbone frozen: CPU fp16 convolution backward is emulated)'
        if scaler is not None:
            reason += (f'; loss scale now {scaler.get_scale():g}, '
                       f'{sum(overflowed)} step(s) skipped by the scaler (inf gradients)')
        return PASS, reason, details

    def check_steps_fp32(self):
        return self._steps('steps_fp32')

    def check_steps_bf16(self):
        return self._steps('steps_bf16')

    def check_steps_fp16(self):
        return self._steps('steps_fp16')

    @torch.no_grad()
    def _detections(self, model, images, sizes) -> dict:
        """End-to-end detections (the export's wrapper) as numpy, on the
        model's device."""
        from rtdetr_mm.deployment.onnx_export import RTDETRv2ONNXWrapper
        from .export_models import INPUT_SIZE
        device = next(model.parameters()).device
        wrapper = RTDETRv2ONNXWrapper(model, INPUT_SIZE).eval()
        outputs = wrapper(images.to(device), sizes.to(device))
        return {name: out.detach().cpu().numpy()
                for name, out in zip(wrapper.output_names, outputs)}

    def _tolerance_verdict(self, diff: dict, what: str):
        details = {k: float(v) for k, v in diff.items()}
        ok = (diff['count_mismatches'] == 0 and diff['max_score_diff'] <= SCORE_TOL
              and diff['max_box_diff'] <= BOX_TOL)
        reason = (f"{what}: {diff['matched']} detections matched, max score diff "
                  f"{diff['max_score_diff']:.2e} (<= {SCORE_TOL:g}), max box diff "
                  f"{diff['max_box_diff']:.3f} px (<= {BOX_TOL:g})")
        if diff['count_mismatches']:
            reason += f", {diff['count_mismatches']} (image, label) count mismatches"
        return (PASS if ok else FAIL), reason, details

    def check_agreement(self):
        if self.device == 'cpu':
            return SKIP, 'the device is the CPU: nothing to compare with', {}
        from rtdetr_mm.deployment.onnx_export import compare_detections, example_inputs
        from .export_models import INPUT_SIZE
        cpu_model = self.small().eval()
        device_model = copy.deepcopy(cpu_model).to(self.device).eval()
        images, sizes = example_inputs(self.opts.batch, INPUT_SIZE, seed=1)
        diff = compare_detections(self._detections(device_model, images, sizes),
                                  self._detections(cpu_model, images, sizes))
        return self._tolerance_verdict(diff, f'{self.device} vs CPU, same weights')

    def check_sync_bn(self):
        import torch.distributed as dist
        from mmengine.model import MMDistributedDataParallel, convert_sync_batchnorm
        from mmengine.optim import build_optim_wrapper

        from rtdetr_mm.engine.dist import CPUDistributedDataParallel
        if dist.is_initialized():
            return SKIP, 'a process group already exists in this process', {}
        model, cfg = self.r18()
        model = convert_sync_batchnorm(model, implementation='torch')
        num_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        if not num_sync:
            return FAIL, 'no BatchNorm was converted to SyncBatchNorm', {}
        backend = 'nccl' if self.device == 'cuda' else 'gloo'
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        try:
            model.to(self.device).train()
            if self.device == 'cuda':
                ddp = MMDistributedDataParallel(module=model,
                                                device_ids=[torch.cuda.current_device()])
            else:
                ddp = CPUDistributedDataParallel(module=model)
            norms = [m for m in ddp.module.modules()
                     if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                     and m.track_running_stats and m.training]
            kept_sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
            before = [m.running_mean.clone() for m in norms]
            wrapper = build_optim_wrapper(ddp.module, copy.deepcopy(cfg.optim_wrapper))
            log_vars = ddp.train_step(make_batch(self.opts.batch, self.opts.step_size, seed=5),
                                      wrapper)
            loss = float(log_vars['loss'].detach())
            updated = sum(not torch.equal(m.running_mean, b) for m, b in zip(norms, before))
        finally:
            dist.destroy_process_group()
        details = dict(backend=backend, converted=num_sync, sync_bn_in_wrapper=kept_sync,
                       bn_updated=updated, bn_trainable=len(norms), loss=loss,
                       wrapper=type(ddp).__name__)
        if wrapper.last_step_skipped or loss != loss or abs(loss) == float('inf'):
            return FAIL, f'non-finite loss {loss} in the {backend} step', details
        if self.device == 'cuda' and kept_sync != num_sync:
            return FAIL, f'{num_sync - kept_sync} SyncBatchNorm layers lost in the wrapper', details
        if updated != len(norms):
            return FAIL, (f'{len(norms) - updated} of {len(norms)} trainable BatchNorms did not '
                          'update their running statistics'), details
        reason = (f'{num_sync} BatchNorms -> SyncBatchNorm; one step in a 1-process {backend} '
                  f'group through {type(ddp).__name__}: loss {loss:.3f}, {updated} running '
                  'statistics updated')
        if self.device == 'cpu':
            reason += ' (on the CPU the wrapper reverts SyncBN: torch trains it on GPUs only)'
        return PASS, reason, details

    def check_train_tool(self):
        from .checkout import checkout_env
        from .tiny_coco import make_tiny_coco, tiny_config
        root = osp.join(self.work_dir, 'train_tool')
        data = make_tiny_coco(osp.join(root, 'data'), num_images=4, size=(128, 128), seed=0)
        config = tiny_config(osp.join(root, 'config.py'), R18, data, size=(128, 128),
                             max_epochs=1, batch_size=2, small_model=self.opts.quick)
        work_dir = osp.join(root, 'work_dir')
        extra = dict(CUDA_VISIBLE_DEVICES='') if self.device == 'cpu' else {}
        proc = subprocess.run(
            [sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir,
             '--amp'], cwd=root, env=checkout_env(threads=None, **extra), capture_output=True,
            text=True, timeout=900)
        output = proc.stdout + proc.stderr
        details = dict(work_dir=work_dir, exit_code=proc.returncode)
        if proc.returncode != 0:
            details['output_tail'] = output[-3000:]
            return FAIL, f'tools/train.py exited {proc.returncode}: {output.strip()[-300:]}', \
                details
        scalars = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
        records = []
        if scalars:
            with open(scalars[-1]) as f:
                records = [json.loads(line) for line in f if line.strip()]
        train = [r for r in records if 'loss' in r]
        val = [r for r in records if 'coco/bbox_mAP' in r]
        amp = [line.strip() for line in output.splitlines() if 'mixed precision:' in line]
        details.update(train_losses=[r['loss'] for r in train],
                       bbox_mAP=[r['coco/bbox_mAP'] for r in val], amp=amp[:1])
        finite = all(abs(r['loss']) < float('inf') for r in train)
        if len(train) != 2 or not finite:
            return FAIL, f'expected 2 finite training losses, logged {details["train_losses"]}', \
                details
        if len(val) != 1:
            return FAIL, f'expected one validation with coco/bbox_mAP, found {len(val)}', details
        if not amp:
            return FAIL, '--amp: no mixed-precision line in the output', details
        return PASS, (f'2 iterations + validation (coco/bbox_mAP {val[0]["coco/bbox_mAP"]}), '
                      f'{amp[0].split("mixed precision:")[1].split(";")[0].strip()}'), details

    def check_onnx(self):
        from rtdetr_mm.deployment.onnx_export import (compare_detections, example_inputs,
                                                      export_onnx, fuse_for_deploy,
                                                      run_onnxruntime)
        from .export_models import INPUT_SIZE
        cpu_model = self.small().eval()
        device_model = copy.deepcopy(cpu_model).to(self.device).eval()
        out = osp.join(self.work_dir, 'selfcheck.onnx')
        # as tools/deployment/export_onnx.py: the fused copy is traced; the
        # unfused CPU model is the reference (checks the fusion too)
        export_onnx(fuse_for_deploy(device_model), out, INPUT_SIZE, batch=1, dynamic_batch=True)
        images, sizes = example_inputs(self.opts.batch, INPUT_SIZE, seed=1)
        diff = compare_detections(run_onnxruntime(out, images, sizes),
                                  self._detections(cpu_model, images, sizes))
        status, reason, details = self._tolerance_verdict(
            diff, f'exported on {self.device}, onnxruntime vs PyTorch (CPU)')
        details['file'] = out
        return status, reason, details

    def check_throughput(self):
        details = {}
        train = {k: v for k, v in self.step_times.items() if len(v) > 1}
        if not train:  # the steps did not run: time fp32 ones here
            status, reason, _ = self._steps('steps_fp32')
            if status != PASS:
                return FAIL, f'fp32 training steps: {reason}', {}
            train = {'steps_fp32': self.step_times['steps_fp32']}
        for item, times in train.items():
            later = times[1:]  # the first step warms up
            details[f'train_{item[6:]}_img_per_s'] = round(
                self.opts.batch * len(later) / sum(later), 2)
        model, _ = self.r18()
        model.to(self.device).eval()
        batch = make_batch(self.opts.batch, self.opts.size, seed=9)
        repeats = 10 if self.device == 'cuda' else 3
        with torch.inference_mode():
            model.test_step(batch)  # warm-up (builds the fused copy)
            _sync(self.device)
            start = time.perf_counter()
            for _ in range(repeats):
                model.test_step(batch)
            _sync(self.device)
        seconds = time.perf_counter() - start
        details['infer_fp32_img_per_s'] = round(self.opts.batch * repeats / seconds, 2)
        details.update(train_size=self.opts.step_size, infer_size=self.opts.size,
                       batch=self.opts.batch)
        text = ', '.join(f'{k[6:-10]} {v}' for k, v in details.items()
                         if k.startswith('train_') and k.endswith('_img_per_s'))
        return PASS, (f'training {text} img/s at {self.opts.step_size}x{self.opts.step_size}; '
                      f'inference {details["infer_fp32_img_per_s"]} img/s at '
                      f'{self.opts.size}x{self.opts.size} (batch {self.opts.batch})'), details


def format_result(result: Result) -> str:
    return f'{result.status:4}  {result.name:16} {result.seconds:7.1f}s  {result.reason}'


def run(opts: Options, only: Sequence[str] = (), log: Callable[[str], None] = print) -> dict:
    """All (or ``only`` those) items; the report (JSON-serialisable):
    ``device``, ``status`` (FAIL if any item failed), ``items``."""
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    importlib.import_module('rtdetr_mm')  # registers the modules
    check_options(opts, only)
    init_default_scope('mmdet')
    # the optim wrappers' info lines (mixed precision, ...) stay out of the
    # item lines: mmengine's current logger at WARNING while the items run
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix='rtdetr_mm_selfcheck_') as tmp:
            checker = SelfCheck(opts, log=log)
            checker.work_dir = opts.work_dir or tmp
            os.makedirs(checker.work_dir, exist_ok=True)
            results = checker.run(only)
    finally:
        logger.setLevel(level)
    failed = [r.name for r in results if r.status == FAIL]
    return dict(device=opts.device, status=FAIL if failed else PASS, failed=failed,
                seconds=round(time.perf_counter() - start, 1), options=asdict(opts),
                items=[asdict(r) for r in results])
