"""Folding for inference: a detector rewritten into fewer ops, same outputs.

Two rewrites, both exact in eval mode (up to float rounding):

1. Conv -> BN folding. A BN in eval mode (running statistics) or a
   ``FrozenBatchNorm2d`` is an affine map per output channel,
   ``y = x * s + t`` with ``s = weight / sqrt(running_var + eps)`` and
   ``t = bias - running_mean * s``, so ``norm(conv(x))`` equals one conv
   with kernel ``W * s`` (per output channel) and bias ``(b - mean) * s + bias``.
   Every Conv -> BN pair of the model is a ``ConvNormLayer`` (the backbone,
   including its stem and vd shortcuts, the neck's CCFF and input
   projections, the head's input projections); after folding its ``norm``
   is ``nn.Identity()`` and its ``conv`` has a bias.
2. RepVGG fusion: every module with a ``convert_to_deploy`` method (the
   official convention; in this package only ``RepVggBlock``) merges its
   3x3 and 1x1 conv-BN branches into one 3x3 conv, with the same folding.

The folding arithmetic is torch's ``torch.nn.utils.fusion.fuse_conv_bn_weights``
(it takes the BN's tensors, so it serves ``FrozenBatchNorm2d``, whose
statistics and affine weights are buffers, as well as ``nn.BatchNorm2d``);
:func:`fold_conv_bn` is the one place that calls it. mmcv's
``fuse_conv_bn`` is not used: it only recognises ``_BatchNorm`` children
directly following a conv, so it would miss ``FrozenBatchNorm2d``.

NOTE: the official ``convert_to_deploy`` (``rtdetrv2_pytorch``) only fuses
the RepVGG blocks; we also fold every BN into its conv, which removes one
elementwise scale-and-shift pass over every conv output at inference.
torch's ONNX exporter already folds ``nn.BatchNorm2d`` in eval mode, but not
``FrozenBatchNorm2d``: an r50vd graph loses its backbone's Mul/Add pairs too
(at 96 x 128: 906 -> 772 nodes, of which RepVGG accounts for 24).
"""
import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .conv_norm import ConvNormLayer
from .frozen_bn import FrozenBatchNorm2d

#: norms that are a per-channel affine map in eval mode, hence foldable
FOLDABLE_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


def is_foldable_norm(norm: nn.Module) -> bool:
    """Whether ``norm`` is a BN whose eval-mode output is ``x * s + t`` per
    channel (a BN without running statistics normalises with the batch's and
    is not)."""
    return (isinstance(norm, FOLDABLE_NORMS)
            and getattr(norm, 'running_mean', None) is not None
            and getattr(norm, 'running_var', None) is not None)


def fold_conv_bn(conv: nn.Conv2d, norm: Optional[nn.Module]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of the single conv equal to ``norm(conv(x))`` in eval mode.

    Args:
        conv (nn.Conv2d): Weight (C_out, C_in / groups, k, k), bias (C_out, )
            or None.
        norm (nn.Module, optional): A foldable BN over C_out channels
            (:func:`is_foldable_norm`), or ``None`` / ``nn.Identity`` (an
            already folded pair: the conv's own kernel and bias are returned).

    Returns:
        tuple[Tensor, Tensor]: Kernel (C_out, C_in / groups, k, k) and bias
        (C_out, ), in the conv's dtype and device, detached.
    """
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if norm is None or isinstance(norm, nn.Identity):
        return weight, bias if bias is not None else weight.new_zeros(weight.shape[0])
    if not is_foldable_norm(norm):
        raise TypeError(f'cannot fold {type(norm).__name__} into a conv: only BatchNorm2d / '
                        'SyncBatchNorm with running statistics and FrozenBatchNorm2d')
    # Folded in float64 (float32 where the device has no float64), then
    # rounded once to the conv's dtype: a half-precision model is not folded
    # in half precision.
    work = torch.float32 if weight.device.type == 'mps' else torch.float64

    def up(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.detach().to(work)

    kernel, fused_bias = fuse_conv_bn_weights(up(weight), up(bias), up(norm.running_mean),
                                              up(norm.running_var), norm.eps, up(norm.weight),
                                              up(norm.bias))
    return kernel.detach().to(weight.dtype), fused_bias.detach().to(weight.dtype)


@torch.no_grad()
def fold_conv_norm_(layer: ConvNormLayer) -> bool:
    """Fold ``layer.norm`` into ``layer.conv`` in place: the conv gets the
    folded kernel and a bias, ``norm`` becomes ``nn.Identity()``.

    The conv's parameters are replaced by new tensors (no tensor of the
    layer before the call is written to).

    Returns:
        bool: True when a norm was folded (False: already folded, or a norm
        that is not foldable, left as it is).
    """
    if not is_foldable_norm(layer.norm):
        return False
    kernel, bias = fold_conv_bn(layer.conv, layer.norm)
    requires_grad = layer.conv.weight.requires_grad
    layer.conv.weight = nn.Parameter(kernel, requires_grad=requires_grad)
    layer.conv.bias = nn.Parameter(bias, requires_grad=requires_grad)
    layer.norm = nn.Identity()
    return True


def fold_batch_norms_(module: nn.Module) -> int:
    """Fold the norm of every ``ConvNormLayer`` inside ``module`` (in place).

    Returns:
        int: Norms folded.
    """
    return sum(fold_conv_norm_(m) for m in list(module.modules())
               if isinstance(m, ConvNormLayer))


def fuse_repvgg_blocks_(module: nn.Module) -> int:
    """Call ``convert_to_deploy()`` on every module inside ``module`` that
    has one (``RepVggBlock``: 3x3 + 1x1 conv-BN branches -> one 3x3 conv).

    Returns:
        int: Modules converted.
    """
    blocks = [m for m in module.modules() if m is not module
              and callable(getattr(m, 'convert_to_deploy', None))]
    for block in blocks:
        block.convert_to_deploy()
    return len(blocks)


def reparameterize_(module: nn.Module) -> nn.Module:
    """Fuse the RepVGG blocks of ``module`` and fold every Conv -> BN pair,
    IN PLACE. Uses the BN running statistics (eval-mode semantics); the
    module's train/eval mode is not changed.

    Returns:
        nn.Module: ``module``.
    """
    with torch.no_grad():
        fuse_repvgg_blocks_(module)
        fold_batch_norms_(module)
    return module


def reparameterized_copy(detector: nn.Module) -> nn.Module:
    """A fused inference copy of ``detector``; ``detector`` is left untouched.

    ``copy.deepcopy`` -> ``eval()`` -> RepVGG fusion -> BN folding. The copy
    computes the same function as ``detector`` in eval mode: images
    (B, 3, H, W) -> backbone maps -> neck maps -> head outputs, each of the
    same shape as the detector's, equal up to float rounding. Its
    parameters do not require gradients (it is never trained) and, for an
    ``RTDETRv2``, its own ``reparameterize`` is off (no copy of the copy).

    Args:
        detector (nn.Module): Any module; for an ``RTDETRv2`` the cached
            inference copy is not copied (see ``RTDETRv2``).

    Returns:
        nn.Module: The fused copy, in eval mode, on the detector's devices
        and dtypes.
    """
    fused = copy.deepcopy(detector).eval()
    if hasattr(fused, 'reparameterize'):
        fused.reparameterize = False
    reparameterize_(fused)
    fused.requires_grad_(False)
    return fused
