"""Classification loss of the RT-DETRv2 head: VFL (official), sigmoid focal or
sigmoid BCE, with a "no-object" (eos) weight and label smoothing."""
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS

from ..layers.precision import upcast

_DEFAULT_ALPHA_GAMMA = {'vfl': (0.75, 2.0), 'focal': (0.25, 2.0)}


@MODELS.register_module()
class RTDETRv2ClassificationLoss(nn.Module):
    """Sigmoid classification loss over ``num_classes`` logits per query.

    Terms are summed over queries and classes and divided by ``avg_factor``
    (the number of GT boxes averaged over ranks), as the official criterion.
    With the defaults this is exactly the official RT-DETRv2 VFL.

    Let ``x`` be a logit, ``p = sigmoid(x)``, ``t`` the one-hot GT class of the
    query (all zeros for a query matched to nothing), ``q`` the IoU of the
    query's box with its GT (0 if unmatched), ``C`` the number of classes and
    ``eps`` the label smoothing. Smoothed targets ``s = t * (1 - eps) + eps / C``.

    - ``'vfl'``: target ``y = q * s``; weight ``w = alpha * p.detach()**gamma *
      (1 - t) + q * t`` (the weighting mask uses the unsmoothed ``t``);
      loss = ``w * BCE(x, y)``.
    - ``'focal'``: ``y = s``; loss = ``(alpha*y + (1-alpha)*(1-y)) *
      |y - p|**gamma * BCE(x, y)`` (torchvision's sigmoid focal loss,
      extended to soft targets).
    - ``'bce'``: loss = ``BCE(x, s)``.

    Every row (all classes of one query) of a query matched to no GT — the
    "no-object" rows, including denoising negatives and padding — is then
    multiplied by ``eos_coef``. The normaliser is left alone, so
    ``eos_coef=1`` is the official loss.

    NOTE: mmdet's ``VarifocalLoss`` is not reused: it does not detach ``p`` in
    the weight and weights positives by ``t`` instead of the official ``q * t``.

    Args:
        loss_type (str): ``'vfl'`` (default), ``'focal'`` or ``'bce'``.
        alpha (float, optional): VFL/focal alpha; None takes the family's
            official default (VFL 0.75, focal 0.25). Must be None for bce.
        gamma (float, optional): VFL/focal gamma; None takes 2.0. Must be
            None for bce.
        eos_coef (float): Weight of the rows of unmatched queries.
        label_smoothing (float): ``eps`` above, in [0, 1).
        loss_weight (float): Multiplier of the whole loss.
    """

    def __init__(self, loss_type: str = 'vfl', alpha: Optional[float] = None,
                 gamma: Optional[float] = None, eos_coef: float = 1.0,
                 label_smoothing: float = 0.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if loss_type not in ('vfl', 'focal', 'bce'):
            raise ValueError(f"loss_cls.loss_type must be 'vfl', 'focal' or 'bce', got {loss_type!r}")
        if loss_type == 'bce' and (alpha is not None or gamma is not None):
            raise ValueError("loss_cls.alpha / loss_cls.gamma have no meaning for loss_type='bce'; "
                             'leave them unset (None)')
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f'loss_cls.label_smoothing must be in [0, 1), got {label_smoothing}')
        if eos_coef < 0:
            raise ValueError(f'loss_cls.eos_coef must be >= 0, got {eos_coef}')
        # the same ranges as the run-settings table (engine/runner/run_settings.py),
        # for a loss built outside a run
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f'loss_cls.alpha must be in [0, 1], got {alpha}: above 1 the '
                             'negative term changes sign and the loss goes negative')
        if gamma is not None and gamma < 0:
            raise ValueError(f'loss_cls.gamma must be >= 0, got {gamma}')
        default_alpha, default_gamma = _DEFAULT_ALPHA_GAMMA.get(loss_type, (None, None))
        self.loss_type = loss_type
        self.alpha = default_alpha if alpha is None else alpha
        self.gamma = default_gamma if gamma is None else gamma
        self.eos_coef = eos_coef
        self.label_smoothing = label_smoothing
        self.loss_weight = loss_weight

    def forward(self, cls_score: torch.Tensor, labels: torch.Tensor,
                iou_targets: torch.Tensor,
                avg_factor: Union[float, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            cls_score (Tensor): Logits, shape (..., N, C) (queries of all
                images; leading dims, e.g. decoder layers, are kept apart).
            labels (Tensor): Long (..., N), GT class of each query or ``C``
                for a query matched to no GT.
            iou_targets (Tensor): (..., N), IoU of matched queries with their
                GT (detached), 0 elsewhere. Used by ``'vfl'`` only.
            avg_factor (float | Tensor): Normaliser (GT boxes averaged over
                ranks; a 0-dim tensor, so it is never read on the host).

        Returns:
            Tensor: The loss summed over queries and classes, shape (...)
            (a scalar for (N, C) logits).
        """
        cls_score = upcast(cls_score)  # at least fp32 (float64 stays float64)
        num_classes = cls_score.shape[-1]
        # NOTE: not F.one_hot, which reads the labels' min and max on the host
        # (CPU); a comparison gives the same one-hot with no host read.
        classes = torch.arange(num_classes, device=labels.device)
        onehot = (labels.unsqueeze(-1) == classes).to(cls_score.dtype)
        smoothed = onehot
        if self.label_smoothing > 0:
            smoothed = onehot * (1 - self.label_smoothing) + self.label_smoothing / num_classes
        if self.loss_type == 'vfl':
            q = iou_targets.to(cls_score.dtype).unsqueeze(-1)
            target = q * smoothed
            weight = (self.alpha * cls_score.sigmoid().detach().pow(self.gamma) * (1 - onehot)
                      + q * onehot)
            loss = F.binary_cross_entropy_with_logits(cls_score, target, weight=weight,
                                                      reduction='none')
        elif self.loss_type == 'focal':
            prob = cls_score.sigmoid()
            bce = F.binary_cross_entropy_with_logits(cls_score, smoothed, reduction='none')
            modulator = (smoothed - prob).abs().pow(self.gamma)
            balance = self.alpha * smoothed + (1 - self.alpha) * (1 - smoothed)
            loss = balance * modulator * bce
        else:
            loss = F.binary_cross_entropy_with_logits(cls_score, smoothed, reduction='none')
        if self.eos_coef != 1.0:
            unmatched = (labels == num_classes).to(loss.dtype).unsqueeze(-1)
            loss = loss * (1 - unmatched + self.eos_coef * unmatched)
        return self.loss_weight * loss.sum((-2, -1)) / avg_factor
