"""Which dtype a computation runs in: the one rule for fp16 / bf16 autocast,
fp32 and float64 models.

- :func:`compute_dtype`: what values that must stay precise (anchors, the
  valid-token mask, position embeddings, denoising boxes, losses, matching
  costs, decoded boxes) are computed in: fp32 for fp16 / bf16 / fp32
  activations, float64 for a float64 model. ``x.float()`` would instead turn a
  float64 model's values into fp32.
- :func:`upcast`: a tensor in its :func:`compute_dtype`.
- :func:`value_dtype`: the dtype of constants built for activations of a
  given dtype (anchors, position embeddings): the activations' dtype, except
  under fp16 / bf16 autocast, where the activations are low-precision only
  because autocast made them so and the parameters are fp32: then fp32, as
  the official code keeps them. A ``.half()`` model (no autocast) gets fp16
  constants, which its fp16 layers can take.
- :func:`clamp_fp16_overflow`: the fp16 overflow guard of the transformer
  layers' residuals.
"""
from typing import Optional

import torch

#: Device types ``torch.is_autocast_enabled`` is asked about.
_AUTOCAST_DEVICES = ('cpu', 'cuda', 'xpu', 'mps', 'hpu')

#: Largest finite fp16 value (what the official decoder clamps to).
FP16_MAX = float(torch.finfo(torch.float16).max)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least fp32: fp16 / bf16 / fp32 -> fp32, float64 -> float64."""
    return torch.promote_types(dtype, torch.float32)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in :func:`compute_dtype` (unchanged when already there)."""
    return x.to(compute_dtype(x.dtype))


def autocast_dtype(device) -> Optional[torch.dtype]:
    """The autocast dtype in force on ``device`` (a ``torch.device``, a
    string or None for the CPU), or None when autocast is off there."""
    device_type = torch.device(device if device is not None else 'cpu').type
    if device_type not in _AUTOCAST_DEVICES:
        return None  # e.g. 'meta': no autocast there
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def value_dtype(dtype: torch.dtype, device=None) -> torch.dtype:
    """The dtype of constants (anchors, position embeddings) that go with
    activations of ``dtype`` on ``device``: fp32 when ``dtype`` is fp16 / bf16
    and autocast is on there (the parameters are fp32), else ``dtype``."""
    if dtype in (torch.float16, torch.bfloat16) and autocast_dtype(device) is not None:
        return compute_dtype(dtype)
    return dtype


def runs_in_fp16(x: torch.Tensor) -> bool:
    """Whether ``x`` is fp16 or fp16 autocast is on for its device (then the
    matmuls that produce the next activations run in fp16)."""
    return x.dtype == torch.float16 or autocast_dtype(x.device) == torch.float16


def clamp_fp16_overflow(x: torch.Tensor) -> torch.Tensor:
    """Clamp ``x`` to the finite fp16 range ``[-65504, 65504]`` when it is
    computed in fp16 (fp16 tensor or fp16 autocast); otherwise ``x`` as is.

    An FFN output that overflows fp16 becomes ``inf``; the residual sum
    passes it on, and the LayerNorm after it turns the whole token into NaN
    (``inf - inf``). Clamped, the token stays finite and the LayerNorm brings
    it back to scale. NaN inputs stay NaN.

    NOTE: the official fix (lyuwenyu/RT-DETR PR #464) clamps the decoder's
    FFN residual to +-65504 unconditionally; we clamp only where fp16 is in
    use, so fp32 / bf16 / float64 values (and the ONNX graph of an fp32
    model) are unchanged, and we also clamp in the AIFI encoder layer, whose
    FFN can overflow the same way.
    """
    if not runs_in_fp16(x):
        return x
    return x.clamp(min=-FP16_MAX, max=FP16_MAX)
