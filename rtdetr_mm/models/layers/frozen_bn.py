"""BatchNorm2d with fixed statistics and affine parameters."""
import torch
import torch.nn as nn


class FrozenBatchNorm2d(nn.Module):
    """``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` with
    every tensor a buffer (no gradient, no statistics update).

    Same formula as torchvision's and the official RT-DETR one. A
    ``num_batches_tracked`` entry in a loaded state dict is ignored, so weights
    of a trainable BN load into it unchanged.

    Args:
        num_features (int): Channels C of the (B, C, H, W) input.
        eps (float): Added to the variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer('weight', torch.ones(num_features))
        self.register_buffer('bias', torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + 'num_batches_tracked', None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W) in ``x.dtype``.

        NOTE: scale and shift are computed in the buffers' dtype (fp32) and
        cast to ``x.dtype``, so an fp16 / bf16 activation stays fp16 / bf16
        (torchvision's ``FrozenBatchNorm2d`` and the official one promote it
        to fp32, which makes every following conv under autocast cast it
        back).
        """
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return (x * scale.to(x.dtype).reshape(1, -1, 1, 1)
                + shift.to(x.dtype).reshape(1, -1, 1, 1))

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d) -> 'FrozenBatchNorm2d':
        frozen = cls(bn.num_features, bn.eps)
        if bn.affine:
            frozen.weight.copy_(bn.weight.detach())
            frozen.bias.copy_(bn.bias.detach())
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
        return frozen

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


def freeze_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a frozen copy."""
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batch_norm(module)
    for name, child in module.named_children():
        new = freeze_batch_norms(child)
        if new is not child:
            setattr(module, name, new)
    return module
