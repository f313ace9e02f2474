"""Mixed precision (USE_FP16 / USE_BF16) on any device."""
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn as nn
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.logging import print_log

from ..runner.run_settings import RunSettingsError
from .optim_wrapper import RTDETRv2OptimWrapper

_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


class Float16DeviceError(RunSettingsError, RuntimeError):
    """``optim_wrapper.dtype='float16'`` on a device where it is not allowed
    (CPU without ``optim_wrapper.allow_cpu_fp16=True``, or neither CPU nor
    CUDA).

    NOTE: a ``RunSettingsError`` (so ``tools/train.py`` prints it as
    ``error: ...`` and exits 1) that is also the ``RuntimeError`` this
    refusal always was, for callers that catch that.
    """


@OPTIM_WRAPPERS.register_module()
class RTDETRv2AmpOptimWrapper(RTDETRv2OptimWrapper):
    """Autocast the forward pass to ``dtype``; fp16 also scales the loss.

    - ``dtype='bfloat16'``: ``torch.autocast`` on the model's device (CPU or
      GPU); bf16 has fp32's exponent range, so no loss scaling.
    - ``dtype='float16'``: autocast with a dynamic ``torch.amp.GradScaler``
      of the model's device (gradients are unscaled before clipping). On CUDA
      always; on CPU only with ``allow_cpu_fp16=True``, else
      :class:`Float16DeviceError` at the first forward.

    The head computes its losses (and the Hungarian matching costs) in fp32
    whatever the autocast dtype. The device type is taken from the model's
    parameters at the first forward, never hard-coded. The choice is logged
    once.

    Two different skips:

    - a non-finite LOSS skips backward and step, as ``RTDETRv2OptimWrapper``
      (the base class) does; ``RTDETRv2NonFiniteLossHook`` then stops the run
      or goes on (:attr:`last_step_skipped`).
    - with fp16, a finite loss whose (scaled) GRADIENTS hold inf/NaN is the
      scaler's business, as in any fp16 run: ``GradScaler.step`` skips the
      optimizer step (the weights are not touched), ``update`` multiplies the
      scale by ``backoff_factor`` and the run goes on. It is no error:
      :attr:`last_step_overflowed` is True, an info line names the scales,
      and ``last_step_skipped`` stays False.

    With ``clip_grad``, an overflowed step logs a ``grad_norm`` of inf/NaN
    (the norm of the unscaled inf gradients, as mmengine's
    ``AmpOptimWrapper`` logs it); the logger's window mean shows it for a
    few iterations. The scaler's state (scale,
    growth tracker, factors) is saved under ``'loss_scaler'`` in
    :meth:`state_dict` (the checkpoint's ``optimizer``) and restored by
    :meth:`load_state_dict` on resume, also before the first forward created
    the scaler.

    NOTE: mmengine's ``AmpOptimWrapper`` is not reused because its
    constructor asserts a CUDA/NPU/MLU/MUSA device, so bf16 on CPU fails.

    NOTE: fp16 on CPU is an explicit opt-in (``allow_cpu_fp16``), unlike
    torch, which allows it. Most CPUs have no native fp16 arithmetic, so
    torch emulates many fp16 kernels there (conversions around fp32 math):
    it is not expected to be faster than fp32, and for speed or memory on
    CPU ``'bfloat16'`` (USE_BF16) is the choice. CPU fp16 exists to test the
    loss-scaler path without a GPU (tests/test_engine/test_optimizers/
    test_fp16_cpu.py) and for CPUs with native fp16 (e.g. AVX512-FP16, AMX-
    FP16); a user asking for fp16 on a CPU by mistake gets the refusal
    instead of a silently slow run.

    Args:
        optimizer: As ``OptimWrapper``.
        dtype (str): ``'bfloat16'`` or ``'float16'``.
        init_scale (float): Initial fp16 loss scale (GradScaler's default).
        allow_cpu_fp16 (bool): Allow ``dtype='float16'`` (with the scaler)
            when the model is on the CPU. Default False: refused.
        accumulative_counts, clip_grad: As ``OptimWrapper``.

    Attributes:
        loss_scaler (torch.amp.GradScaler | None): fp16's scaler, created at
            the first forward on the model's device (None for bf16).
        last_step_overflowed (bool): The last optimizer step was skipped by
            the scaler (inf/NaN gradients of a finite loss).
    """

    last_step_overflowed = False

    def __init__(self, optimizer: torch.optim.Optimizer, dtype: str = 'bfloat16',
                 init_scale: float = 2.0 ** 16, allow_cpu_fp16: bool = False,
                 accumulative_counts: int = 1, clip_grad: Optional[dict] = None) -> None:
        super().__init__(optimizer, accumulative_counts=accumulative_counts,
                         clip_grad=clip_grad)
        if dtype not in _DTYPES:
            raise ValueError(f"optim_wrapper.dtype must be 'bfloat16' or 'float16', got {dtype!r}")
        if not isinstance(allow_cpu_fp16, bool):
            raise ValueError(f'optim_wrapper.allow_cpu_fp16 must be True or False, got '
                             f'{allow_cpu_fp16!r}')
        self.dtype_name = dtype
        self.cast_dtype = _DTYPES[dtype]
        self.init_scale = init_scale
        self.allow_cpu_fp16 = allow_cpu_fp16
        self.loss_scaler: Optional[torch.amp.GradScaler] = None
        self._pending_scaler_state: Optional[dict] = None
        self.device_type: Optional[str] = None

    def _check_fp16_device(self, device_type: str) -> None:
        """Refuse fp16 where it is not allowed (see the class doc)."""
        if device_type == 'cuda' or (device_type == 'cpu' and self.allow_cpu_fp16):
            return
        if device_type == 'cpu':
            raise Float16DeviceError(
                "optim_wrapper.dtype='float16' needs a CUDA device, the model is on cpu; "
                "use dtype='bfloat16' (USE_BF16) there, or set "
                'optim_wrapper.allow_cpu_fp16=True to run fp16 with loss scaling on the CPU '
                '(emulated on most CPUs: for testing the scaler, or a CPU with native fp16)')
        raise Float16DeviceError(
            f"optim_wrapper.dtype='float16' needs a CUDA device (or the CPU with "
            f'optim_wrapper.allow_cpu_fp16=True), the model is on {device_type}; '
            "use dtype='bfloat16' (USE_BF16) there")

    def _setup(self, model: nn.Module) -> None:
        """Pick the device type from the model and create the scaler."""
        param = next(model.parameters())
        self.device_type = param.device.type
        if self.cast_dtype is torch.float16:
            self._check_fp16_device(self.device_type)
            self.loss_scaler = torch.amp.GradScaler(self.device_type, init_scale=self.init_scale)
            if self._pending_scaler_state is not None:
                self.loss_scaler.load_state_dict(self._pending_scaler_state)
                self._pending_scaler_state = None
        print_log(f'mixed precision: {self.dtype_name} autocast on {self.device_type}'
                  + (', dynamic loss scaling' if self.loss_scaler else ', no loss scaling')
                  + '; losses in float32', logger='current')

    @contextmanager
    def optim_context(self, model: nn.Module):
        """``OptimWrapper.optim_context`` (no DDP sync while accumulating)
        inside ``torch.autocast(device_type, dtype)``."""
        if self.device_type is None:
            self._setup(model)
        with super().optim_context(model), \
                torch.autocast(device_type=self.device_type, dtype=self.cast_dtype):
            yield

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[dict] = None,
                      zero_kwargs: Optional[dict] = None) -> None:
        """``RTDETRv2OptimWrapper.update_params``; :attr:`last_step_overflowed`
        is set by this call's optimizer step (False when it made none)."""
        self.last_step_overflowed = False
        super().update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """Back-propagate ``loss`` (scaled for fp16)."""
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        """Clip (after unscaling) and step; fp16 skips steps with inf/NaN
        gradients and lowers the scale, as ``GradScaler`` does."""
        if self.loss_scaler is None:
            super().step(**kwargs)
            return
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        scale = self.loss_scaler.get_scale()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()
        new_scale = self.loss_scaler.get_scale()
        # GradScaler lowers the scale exactly when it skipped the step
        # (found inf/NaN), its public sign of a skip
        self.last_step_overflowed = new_scale < scale
        if self.last_step_overflowed:
            print_log(f'fp16: inf/NaN gradients at loss scale {scale:g}: optimizer step '
                      f'skipped, loss scale lowered to {new_scale:g}', logger='current')

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        elif self._pending_scaler_state is not None:  # loaded, not used yet
            state['loss_scaler'] = dict(self._pending_scaler_state)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        scaler_state = state_dict.pop('loss_scaler', None)
        if scaler_state is not None:
            if self.loss_scaler is not None:
                self.loss_scaler.load_state_dict(scaler_state)
            else:  # restored before the first forward created the scaler
                self._pending_scaler_state = scaler_state
        super().load_state_dict(state_dict)


__all__ = ['RTDETRv2AmpOptimWrapper', 'Float16DeviceError']
