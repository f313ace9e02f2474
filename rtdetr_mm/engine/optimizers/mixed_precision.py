"""Mixed precision (USE_FP16 / USE_BF16) on any device."""
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn as nn
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.logging import print_log

from .optim_wrapper import RTDETRv2OptimWrapper

_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


@OPTIM_WRAPPERS.register_module()
class RTDETRv2AmpOptimWrapper(RTDETRv2OptimWrapper):
    """Autocast the forward pass to ``dtype``; fp16 also scales the loss.

    - ``dtype='bfloat16'``: ``torch.autocast`` on the model's device (CPU or
      GPU); bf16 has fp32's exponent range, so no loss scaling.
    - ``dtype='float16'``: CUDA only, with a dynamic ``torch.amp.GradScaler``
      (gradients are unscaled before clipping).

    The head computes its losses (and the Hungarian matching costs) in fp32
    whatever the autocast dtype. The device type is taken from the model's
    parameters at the first forward, never hard-coded. The choice is logged
    once. A non-finite loss skips backward and step, as
    ``RTDETRv2OptimWrapper`` (the base class) does.

    NOTE: mmengine's ``AmpOptimWrapper`` is not reused because its
    constructor asserts a CUDA/NPU/MLU/MUSA device, so bf16 on CPU fails.

    Args:
        optimizer: As ``OptimWrapper``.
        dtype (str): ``'bfloat16'`` or ``'float16'``.
        init_scale (float): Initial fp16 loss scale (GradScaler's default).
        accumulative_counts, clip_grad: As ``OptimWrapper``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, dtype: str = 'bfloat16',
                 init_scale: float = 2.0 ** 16, accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        super().__init__(optimizer, accumulative_counts=accumulative_counts,
                         clip_grad=clip_grad)
        if dtype not in _DTYPES:
            raise ValueError(f"optim_wrapper.dtype must be 'bfloat16' or 'float16', got {dtype!r}")
        self.dtype_name = dtype
        self.cast_dtype = _DTYPES[dtype]
        self.init_scale = init_scale
        self.loss_scaler: Optional[torch.amp.GradScaler] = None
        self._pending_scaler_state: Optional[dict] = None
        self.device_type: Optional[str] = None

    def _setup(self, model: nn.Module) -> None:
        """Pick the device type from the model and create the scaler."""
        param = next(model.parameters())
        self.device_type = param.device.type
        if self.cast_dtype is torch.float16:
            if self.device_type != 'cuda':
                raise RuntimeError(
                    f"optim_wrapper.dtype='float16' needs a CUDA device, the model is on "
                    f"{self.device_type}; use dtype='bfloat16' (USE_BF16) there")
            self.loss_scaler = torch.amp.GradScaler('cuda', init_scale=self.init_scale)
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

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """Back-propagate ``loss`` (scaled for fp16)."""
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        """Clip (after unscaling) and step; fp16 skips steps with inf/NaN
        gradients and adapts the scale, as ``GradScaler`` does."""
        if self.loss_scaler is None:
            super().step(**kwargs)
            return
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
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
