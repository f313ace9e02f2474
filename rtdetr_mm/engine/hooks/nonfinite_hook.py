"""After a non-finite loss (skipped by the optim wrapper): name it, stop or go on."""
from typing import Dict, List, Optional

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.logging import print_log

from ..optimizers import RTDETRv2OptimWrapper, agree_nonfinite

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
    terms first, their sum ``loss`` last.

    Every term's finiteness and mean are computed on the device and read on
    the host in ONE copy (not one ``bool(isfinite)`` per term: on a GPU each
    would wait for the device)."""
    names, values = [], []
    for name, value in log_vars.items():
        if 'loss' not in name:
            continue
        names.append(name)
        values.append(value.detach() if torch.is_tensor(value) else torch.as_tensor(value))
    if not values:
        return []
    device = next((v.device for v in values if v.device.type != 'cpu'), values[0].device)
    # (N, 2): finite flag and mean of each term, in one host read
    rows = torch.stack([torch.stack([torch.isfinite(v).all().float(), v.float().mean()])
                        for v in (v.to(device) for v in values)])
    bad = [f'{name}={mean}' for name, (finite, mean) in zip(names, rows.tolist())
           if not finite]
    return sorted(bad, key=lambda term: term.startswith('loss='))


def nonfinite_entries(state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Keys of the floating-point tensors of ``state_dict`` that hold NaN or
    inf, in order; one host read per device (not one per tensor)."""
    by_device: Dict[torch.device, List[str]] = {}
    for key, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point():
            by_device.setdefault(value.device, []).append(key)
    bad = set()
    for keys in by_device.values():
        finite = torch.stack([torch.isfinite(state_dict[k]).all() for k in keys]).tolist()
        bad.update(k for k, ok in zip(keys, finite) if not ok)
    return [key for key in state_dict if key in bad]


@HOOKS.register_module()
class RTDETRv2NonFiniteLossHook(Hook):
    """Stop (or go on) after a non-finite loss; refuse NaN checkpoints.

    The optim wrapper (``RTDETRv2OptimWrapper`` or
    ``RTDETRv2AmpOptimWrapper``) checks the summed loss between the forward
    and the backward, on every rank together, and skips backward and step
    when it is NaN or infinite: no NaN ever reaches the gradients, the
    weights or the EMA. After such an iteration this hook names the
    non-finite loss terms of every rank (from the iteration's ``log_vars``)
    and applies ``action``.

    Args:
        action (str): ``'raise'``: stop the run with
            :class:`NonFiniteLossError` naming the iteration (1-based, as the
            log), the epoch, the rank(s) and the loss term(s), in its message
            and in its ``iteration`` and ``terms`` attributes. ``'skip'``: log
            a warning and go on (the wrapper skipped this iteration's
            backward and optimizer step and dropped the gradients accumulated
            so far (with
            ``accumulative_counts > 1`` the rest of the window still steps);
            iteration counters, LR schedule and EMA update count advance as
            usual (the EMA then averages in unchanged weights)).
        max_skips (int, optional): In ``'skip'`` mode, stop with
            :class:`NonFiniteLossError` after this many skipped iterations in
            a row (None: never). A run that keeps diverging should not train
            on silently.
        check_checkpoints (bool): Refuse (``NonFiniteWeightsError``) to write
            a checkpoint whose ``state_dict`` or ``ema_state_dict`` holds NaN
            or infinite values (e.g. from a finite loss with overflowing
            gradients), naming the first keys.
    """
    # before the EMA hook (49), so a stopped run's EMA never counts the step
    priority = 'ABOVE_NORMAL'

    def __init__(self, action: str = 'raise', max_skips: Optional[int] = 10,
                 check_checkpoints: bool = True) -> None:
        if action not in ACTIONS:
            raise ValueError(f'RTDETRv2NonFiniteLossHook: action must be one of {ACTIONS}, '
                             f'got {action!r}')
        self.action = action
        self.max_skips = max_skips
        self.check_checkpoints = check_checkpoints
        self.skipped: List[int] = []  # 1-based iterations skipped
        self._in_a_row = 0

    def before_train(self, runner) -> None:
        """The check lives in the optim wrapper: refuse one without it."""
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, RTDETRv2OptimWrapper):
            raise TypeError(
                f'RTDETRv2NonFiniteLossHook needs optim_wrapper.type = \'RTDETRv2OptimWrapper\' '
                f'(or \'RTDETRv2AmpOptimWrapper\'), which skips the step of a non-finite loss; '
                f'got {type(wrapper).__name__}. Without it a NaN loss would reach the weights.')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """After a skipped step: name the terms, then stop or count."""
        if not runner.optim_wrapper.last_step_skipped:
            self._in_a_row = 0
            return
        terms = nonfinite_terms(outputs or {})
        loss = (outputs or {}).get('loss')
        _, per_rank = agree_nonfinite(terms, loss.device if torch.is_tensor(loss) else None)
        found = '; '.join(f'rank {rank}: {", ".join(t)}' for rank, t in sorted(per_rank.items())
                          ) or 'the summed loss (the iteration returned no loss terms)'
        names = {rank: [t.split('=', 1)[0] for t in rank_terms]
                 for rank, rank_terms in sorted(per_rank.items())}
        iteration = runner.iter + 1
        message = (f'non-finite loss at iteration {iteration} (epoch {runner.epoch + 1}, batch '
                   f'{batch_idx + 1}): {found}')
        self._in_a_row += 1
        if self.action == 'raise':
            raise NonFiniteLossError(
                f'{message}. Training stopped before the optimizer step, so the weights, '
                'the EMA and every checkpoint written so far are finite. To skip such '
                "steps instead, use RTDETRv2NonFiniteLossHook(action='skip').",
                terms=names, iteration=iteration)
        if self.max_skips is not None and self._in_a_row > self.max_skips:
            raise NonFiniteLossError(f'{message}. {self._in_a_row} iterations in a row had a '
                                     f'non-finite loss (max_skips={self.max_skips}): stopping.',
                                     terms=names, iteration=iteration)
        self.skipped.append(iteration)
        print_log(f'{message}. Skipped this backward and optimizer step '
                  f'({len(self.skipped)} skipped so far).', logger='current', level=30)

    # -- checkpoints ----------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_checkpoints:
            return
        bad = [f'{part}.{key}' for part in ('state_dict', 'ema_state_dict')
               for key in nonfinite_entries(checkpoint.get(part) or {})]
        if bad:
            raise NonFiniteWeightsError(
                f'refusing to write a checkpoint at iteration {runner.iter}: {len(bad)} tensors '
                f'hold NaN/inf values, e.g. {bad[:5]}; the previous checkpoints are kept.')


__all__ = ['RTDETRv2NonFiniteLossHook', 'NonFiniteLossError', 'NonFiniteWeightsError',
           'agree_nonfinite', 'nonfinite_entries', 'nonfinite_terms']
