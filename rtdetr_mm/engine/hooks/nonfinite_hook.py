"""Stop (or skip the step) on a non-finite loss, before the optimizer step."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as torch_dist
from mmdet.registry import HOOKS
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

ACTIONS = ('raise', 'skip')


class NonFiniteLossError(RuntimeError):
    """A loss term is NaN or infinite (raised before the optimizer step).

    Args:
        message (str): The error message.
        terms (dict[int, list[str]], optional): ``{rank: names}`` of the
            non-finite loss terms of every rank that saw one (the same on
            every rank), in the order of the message: the terms first, their
            sum ``'loss'`` last. Defaults to ``{}``.
        iteration (int, optional): The 1-based iteration (as the log).

    Attributes:
        terms (dict[int, list[str]]): As the argument.
        iteration (int | None): As the argument.
    """

    def __init__(self, message: str, terms: Optional[Dict[int, List[str]]] = None,
                 iteration: Optional[int] = None) -> None:
        super().__init__(message)
        self.terms: Dict[int, List[str]] = dict(terms or {})
        self.iteration = iteration


class NonFiniteWeightsError(RuntimeError):
    """A checkpoint about to be written holds NaN or infinite values."""


def nonfinite_terms(log_vars: Dict[str, torch.Tensor]) -> List[str]:
    """``'name=value'`` of the loss terms (keys containing ``'loss'``, as
    ``BaseModel.parse_losses`` sums them) that are NaN or infinite; the
    terms first, their sum ``loss`` last."""
    bad = []
    for name, value in log_vars.items():
        if 'loss' not in name:
            continue
        value = value.detach() if torch.is_tensor(value) else torch.as_tensor(value)
        if not bool(torch.isfinite(value).all()):
            bad.append(f'{name}={value.float().mean().item()}')
    return sorted(bad, key=lambda term: term.startswith('loss='))


def _term_name(term: str) -> str:
    """``'name=value'`` -> ``'name'``; the hook's own check of the summed loss
    (``'loss (sum of the terms)=value'``) -> ``'loss'``."""
    name = term.split('=', 1)[0]
    return 'loss' if name.startswith('loss (') else name


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


@HOOKS.register_module()
class RTDETRv2NonFiniteLossHook(Hook):
    """Check every loss term before the optimizer step; refuse NaN checkpoints.

    How: at ``before_train`` the hook wraps two methods of this run's
    objects (instance attributes; no class is patched): the model's
    ``parse_losses`` (called by ``BaseModel.train_step`` and by
    ``MMDistributedDataParallel.train_step`` right before the optimizer
    step) records the non-finite terms, and the optim wrapper's
    ``update_params`` (backward + step, any ``OptimWrapper`` type) asks
    :func:`agree_nonfinite` first. So the check happens after the forward
    and before ``backward``: no NaN ever reaches the gradients, the weights
    or the EMA.

    Args:
        action (str): ``'raise'``: stop the run with
            :class:`NonFiniteLossError` naming the iteration (1-based, as the
            log), the epoch, the rank(s) and the loss term(s), in its message
            and in its ``iteration`` and ``terms`` attributes. ``'skip'``: log
            a warning, skip this iteration's backward and optimizer step and
            drop the gradients accumulated so far (with
            ``accumulative_counts > 1`` the rest of the window still steps);
            iteration counters, LR schedule and EMA update count advance as
            usual (the EMA then averages in unchanged weights).
        max_skips (int, optional): In ``'skip'`` mode, stop with
            :class:`NonFiniteLossError` after this many skipped iterations in
            a row (None: never). A run that keeps diverging should not train
            on silently.
        check_checkpoints (bool): Refuse (``NonFiniteWeightsError``) to write
            a checkpoint whose ``state_dict`` or ``ema_state_dict`` holds NaN
            or infinite values (e.g. from a finite loss with overflowing
            gradients), naming the first keys.
    """
    priority = 'NORMAL'

    def __init__(self, action: str = 'raise', max_skips: Optional[int] = 10,
                 check_checkpoints: bool = True) -> None:
        if action not in ACTIONS:
            raise ValueError(f'RTDETRv2NonFiniteLossHook: action must be one of {ACTIONS}, '
                             f'got {action!r}')
        self.action = action
        self.max_skips = max_skips
        self.check_checkpoints = check_checkpoints
        self._terms: Optional[List[str]] = None
        self._where = ''
        self._iter = 0
        self.skipped: List[int] = []  # 1-based iterations skipped
        self._in_a_row = 0

    # -- wrapping -------------------------------------------------------------
    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not getattr(model, '_rtdetr_mm_nonfinite_wrapped', False):
            parse_losses = model.parse_losses

            def checked_parse_losses(losses):
                loss, log_vars = parse_losses(losses)
                self._terms = nonfinite_terms(log_vars)
                return loss, log_vars

            model.parse_losses = checked_parse_losses
            model._rtdetr_mm_nonfinite_wrapped = True
        optim_wrapper = runner.optim_wrapper
        if hasattr(optim_wrapper, 'update_params') and \
                not getattr(optim_wrapper, '_rtdetr_mm_nonfinite_wrapped', False):
            update_params = optim_wrapper.update_params

            def checked_update_params(loss, *args, **kwargs):
                if self._check(loss, optim_wrapper):
                    return update_params(loss, *args, **kwargs)
                return None

            optim_wrapper.update_params = checked_update_params
            optim_wrapper._rtdetr_mm_nonfinite_wrapped = True

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._iter = runner.iter + 1
        self._where = (f'iteration {runner.iter + 1} (epoch {runner.epoch + 1}, batch '
                       f'{batch_idx + 1})')

    def _check(self, loss: torch.Tensor, optim_wrapper) -> bool:
        """True: go on with backward + step. False: skipped."""
        terms, self._terms = list(self._terms or []), None
        if torch.is_tensor(loss) and not bool(torch.isfinite(loss.detach()).all()) \
                and not any(t.startswith('loss=') for t in terms):
            terms.append(f'loss (sum of the terms)={loss.detach().float().mean().item()}')
        device = loss.device if torch.is_tensor(loss) else None
        bad, per_rank = agree_nonfinite(terms, device)
        if not bad:
            self._in_a_row = 0
            return True
        found = '; '.join(f'rank {rank}: {", ".join(t)}' for rank, t in sorted(per_rank.items()))
        names = {rank: [_term_name(t) for t in rank_terms]
                 for rank, rank_terms in sorted(per_rank.items())}
        message = f'non-finite loss at {self._where or "an iteration"}: {found}'
        self._in_a_row += 1
        if self.action == 'raise':
            raise NonFiniteLossError(
                f'{message}. Training stopped before the optimizer step, so the weights, '
                'the EMA and every checkpoint written so far are finite. To skip such '
                "steps instead, use RTDETRv2NonFiniteLossHook(action='skip').",
                terms=names, iteration=self._iter or None)
        if self.max_skips is not None and self._in_a_row > self.max_skips:
            raise NonFiniteLossError(f'{message}. {self._in_a_row} iterations in a row had a '
                                     f'non-finite loss (max_skips={self.max_skips}): stopping.',
                                     terms=names, iteration=self._iter or None)
        self.skipped.append(self._iter)
        print_log(f'{message}. Skipping this backward and optimizer step '
                  f'({len(self.skipped)} skipped so far).', logger='current', level=30)
        optim_wrapper.zero_grad()
        # keep the accumulation window aligned with the iterations, as the
        # skipped backward would have (OptimWrapper counts in backward())
        if hasattr(optim_wrapper, '_inner_count'):
            optim_wrapper._inner_count += 1
        return False

    # -- checkpoints ----------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_checkpoints:
            return
        bad = []
        for part in ('state_dict', 'ema_state_dict'):
            for key, value in (checkpoint.get(part) or {}).items():
                if torch.is_tensor(value) and value.is_floating_point() and \
                        not bool(torch.isfinite(value).all()):
                    bad.append(f'{part}.{key}')
        if bad:
            raise NonFiniteWeightsError(
                f'refusing to write a checkpoint at iteration {runner.iter}: {len(bad)} tensors '
                f'hold NaN/inf values, e.g. {bad[:5]}; the previous checkpoints are kept.')


__all__ = ['RTDETRv2NonFiniteLossHook', 'NonFiniteLossError', 'NonFiniteWeightsError',
           'agree_nonfinite', 'nonfinite_terms']
