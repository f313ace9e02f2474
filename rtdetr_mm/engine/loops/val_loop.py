"""Validation that can also report the validation loss (issue 14.4)."""
import re
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmdet.registry import LOOPS
from mmengine.dist import all_reduce
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import ValLoop
from mmengine.runner.amp import autocast
from torch.utils.data import DataLoader

#: prefix of the loss keys in the metrics dict: mmengine's RuntimeInfoHook
#: stores metric ``k`` as ``val/k`` and the LogProcessor strips one ``val/``
#: again, so ``val/loss`` is what the json log and every vis backend show
LOSS_PREFIX = 'val/'


@LOOPS.register_module()
class RTDETRv2ValLoop(ValLoop):
    """mmengine's ``ValLoop``, plus the loss on the validation set.

    ``compute_loss=False`` (the default): exactly ``ValLoop``.

    ``compute_loss=True``: each batch goes through ONE forward of the model
    in eval mode, the detector's ``val_loss_and_predict`` (``RTDETRv2``),
    which returns the predictions that ``val_step`` would return (they go to
    the evaluator as usual) and the loss of the same outputs: the training
    criterion (Hungarian matching, classification / L1 / GIoU terms of every
    decoder layer and of the encoder top-k), without denoising (training
    only) and without augmentation (the val pipeline and
    ``data_preprocessor(data, False)``). The weights are those validation
    uses: the fused inference copy of the detector (``reparameterize``), the
    EMA weights when ``RTDETRv2EMAHook`` is on (it swaps them in before
    validation), so the loss is then the EMA model's.

    The metrics dict gets, after the evaluator's keys (``save_best='auto'``
    still picks the first metric), ``val/loss`` (the sum of the terms, as in
    training) and ``val/<term>`` for each term (``val/loss_cls``,
    ``val/d0.loss_bbox``, ``val/enc_loss_iou``...). They reach the json log
    and the vis backends as ``val/loss``... (mmengine prefixes metrics with
    ``val/`` in the message hub and strips it again in the LogProcessor,
    unless ``log_with_hierarchy``), and hooks read them from the metrics
    (``save_best='val/loss', rule='less'``, ``EarlyStoppingHook``).

    Each term is averaged over the validation set weighted by batch size:
    ``sum_b n_b * loss_b / sum_b n_b`` (a smaller last batch counts less),
    summed over ranks with mmengine's ``all_reduce`` (nothing to reduce in
    one process). Every batch loss is the training one: normalised by the
    number of GT boxes of the batch, averaged over ranks.

    NOTE: mmengine's own ValLoop val loss (a ``loss`` element appended by
    ``val_step``) is not used: it averages batches unweighted, does not
    reduce over ranks, and names the terms ``loss_cls`` / ``val_loss``,
    which the json log would mix up with the training terms.

    NOTE: under DDP the sampler pads the val set to a multiple of the world
    size (``DefaultSampler(round_up=True)``); the evaluator drops the padded
    duplicates, the loss average counts them (at most world size - 1 images).

    NOTE: mmengine's LogProcessor averages every logged key that matches its
    ``mean_pattern`` (``loss``) over the last ``window_size`` values of the
    message hub, for validation keys too, i.e. over the last validations.
    Our ``default_runtime.py`` excludes ``val/`` keys from the pattern; with
    a pattern that does not, this loop warns once (the metrics dict, hooks
    and checkpoints are right either way).

    Args:
        runner, dataloader, evaluator, fp16: As ``ValLoop``.
        compute_loss (bool): Also compute the validation loss (above).
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List], fp16: bool = False,
                 compute_loss: bool = False) -> None:
        if not isinstance(compute_loss, bool):
            raise ValueError(f'val_cfg.compute_loss must be True or False, got '
                             f'{compute_loss!r}')
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        self.compute_loss = compute_loss
        self._loss_keys: Optional[List[str]] = None
        self._loss_sums: Optional[torch.Tensor] = None
        self._num_samples = 0
        self._warned_smoothing = False

    def run(self) -> dict:
        """Validate; with ``compute_loss`` the metrics also hold the
        ``val/`` loss terms (class docstring)."""
        if not self.compute_loss:
            return super().run()
        self._check_detector()
        self._warn_if_smoothed()
        self.runner.call_hook('before_val')
        self.runner.call_hook('before_val_epoch')
        self.runner.model.eval()
        self._loss_keys, self._loss_sums, self._num_samples = None, None, 0
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        metrics.update(self._mean_losses())
        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        """One batch: predictions to the evaluator and, with
        ``compute_loss``, the loss of the same forward accumulated."""
        if not self.compute_loss:
            return super().run_iter(idx, data_batch)
        self.runner.call_hook('before_val_iter', batch_idx=idx, data_batch=data_batch)
        detector = self._detector()
        with autocast(enabled=self.fp16):
            losses, outputs = detector.val_loss_and_predict(data_batch)
        self._accumulate(detector, losses, len(outputs))
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook('after_val_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=outputs)

    # -------------------------------------------------------------- helpers
    def _detector(self):
        """The detector itself: a model wrapper's ``val_step`` only calls
        its module's, and the wrapper has no ``val_loss_and_predict``."""
        model = self.runner.model
        return model.module if is_model_wrapper(model) else model

    def _check_detector(self) -> None:
        if not callable(getattr(self._detector(), 'val_loss_and_predict', None)):
            raise ValueError(
                f'val_cfg.compute_loss=True needs a detector with val_loss_and_predict '
                f'(RTDETRv2); {type(self._detector()).__name__} has none: set '
                'val_cfg.compute_loss=False')

    def _accumulate(self, detector, losses: Dict[str, torch.Tensor], batch_size: int) -> None:
        """Add ``batch_size`` x each term (and their sum, ``loss``, from the
        model's ``parse_losses`` as in training) to the running sums, on the
        device (no host copy per batch)."""
        _, log_vars = detector.parse_losses(losses)
        keys = list(log_vars)
        values = torch.stack([v.detach().float() for v in log_vars.values()]).double()
        if self._loss_sums is None:
            self._loss_keys, self._loss_sums = keys, values * batch_size
        else:
            if keys != self._loss_keys:
                raise RuntimeError(f'the loss terms changed between validation batches: '
                                   f'{self._loss_keys} then {keys}')
            self._loss_sums += values * batch_size
        self._num_samples += batch_size

    def _mean_losses(self) -> Dict[str, float]:
        """``{'val/loss': ..., 'val/loss_cls': ...}``: the batch-size weighted
        means, summed over ranks."""
        if self._loss_sums is None:  # an empty validation set on this rank
            return {}
        sums = self._loss_sums.clone()
        count = sums.new_tensor(float(self._num_samples))
        all_reduce(sums)   # op='sum'; a no-op in one process
        all_reduce(count)
        means = (sums / count).tolist()
        return {f'{LOSS_PREFIX}{key}': value for key, value in zip(self._loss_keys, means)}

    def _warn_if_smoothed(self) -> None:
        """Warn (once) when the LogProcessor would log the mean of the last
        validations instead of this one (class docstring)."""
        pattern = getattr(self.runner.log_processor, 'mean_pattern', None)
        if self._warned_smoothing or pattern is None:
            return
        self._warned_smoothing = True
        if re.search(pattern, f'{LOSS_PREFIX}loss') is not None:
            text = getattr(pattern, 'pattern', pattern)
            print_log(f'val_cfg.compute_loss: log_processor.mean_pattern {text!r} '
                      f'matches {LOSS_PREFIX!r}loss, so the json log and the vis backends '
                      'show the mean of the last window_size validations (the metrics are '
                      "right); exclude validation keys, e.g. mean_pattern=r'^(?!val/).*"
                      "(loss|time|data_time|grad_norm)'", logger='current', level=30)
