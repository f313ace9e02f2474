"""The optim wrapper of rtdetr_mm: no NaN ever reaches the weights."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as torch_dist
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.dist import get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper


def agree_nonfinite(local_terms: List[str],
                    device: Optional[torch.device] = None) -> Tuple[bool, Dict[int, List[str]]]:
    """Decide together whether any rank saw a non-finite loss.

    Every rank must call this at the same iteration (one ``all_reduce`` of a
    flag, plus an ``all_gather_object`` of the term names when a rank saw
    one), so a NaN on one rank stops or skips the step on all of them and no
    rank is left waiting in the next gradient all-reduce.

    Args:
        local_terms (list[str]): This rank's non-finite terms (empty: none).
        device (torch.device, optional): Device of the flag tensor (CUDA for
            NCCL, CPU for gloo); default: CUDA when available, else CPU.

    Returns:
        tuple[bool, dict[int, list[str]]]: whether any rank saw one, and
        ``{rank: terms}`` of the ranks that did (the same on every rank).
    """
    if get_world_size() == 1 or not torch_dist.is_initialized():
        return bool(local_terms), ({get_rank(): list(local_terms)} if local_terms else {})
    if device is None:
        device = torch.device('cuda') if torch.cuda.is_available() else torch.device('cpu')
    flag = torch.tensor([1 if local_terms else 0], dtype=torch.int32, device=device)
    torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
    if int(flag.item()) == 0:
        return False, {}
    gathered: List[Optional[List[str]]] = [None] * get_world_size()
    torch_dist.all_gather_object(gathered, list(local_terms))
    return True, {rank: terms for rank, terms in enumerate(gathered) if terms}


@OPTIM_WRAPPERS.register_module()
class RTDETRv2OptimWrapper(OptimWrapper):
    """``OptimWrapper`` that skips the backward and the optimizer step of a
    non-finite loss, on every rank together.

    ``update_params(loss)`` first asks every rank whether its summed loss is
    NaN or infinite (:func:`agree_nonfinite`). If any is, no rank runs
    backward or step: the gradients accumulated so far in the window are
    dropped, the accumulation count still advances (so the window stays
    aligned with the iterations), and :attr:`last_step_skipped` is True.
    The weights, the EMA and every checkpoint therefore stay finite.
    ``RTDETRv2NonFiniteLossHook`` (a default hook) reads
    :attr:`last_step_skipped` after the iteration, names the loss terms and
    stops the run or lets it go on (its ``action``).

    NOTE: mmengine's ``OptimWrapper`` back-propagates a NaN loss into the
    gradients and the weights; this check must sit between the forward and
    the backward, which is ``update_params``.

    Args:
        optimizer, accumulative_counts, clip_grad: As ``OptimWrapper``.

    Attributes:
        last_step_skipped (bool): The last ``update_params`` saw a non-finite
            loss on some rank and skipped backward and step.
    """

    last_step_skipped = False

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        """``OptimWrapper.update_params`` unless some rank's ``loss`` (the
        summed scalar loss) is non-finite; then skip (see the class doc)."""
        local = [] if bool(torch.isfinite(loss.detach()).all()) else ['loss']
        self.last_step_skipped, _ = agree_nonfinite(local, loss.device)
        if not self.last_step_skipped:
            super().update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)
            return
        print_log('non-finite loss: backward and optimizer step skipped', logger='current',
                  level=30)
        self.zero_grad()
        self._inner_count += 1  # as the skipped backward() would have
