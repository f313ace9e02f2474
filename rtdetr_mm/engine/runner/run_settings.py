"""One validation of a run's settings, before anything is built or read.

:func:`check_run_settings` walks a table of config keys (:data:`RULES`):
every seed-script knob and every key this project adds, with its type and
valid range. It collects every violation and raises one
:class:`RunSettingsError` that names each key, its value, the valid range
and what the value would do. ``RTDETRv2Runner.from_cfg`` calls it after
``--cfg-options`` and child configs are merged, before the model, the
datasets or any hook exist; ``tools/misc/check_dataset.py`` reports the same.

:func:`epoch_length_problem` is the one check that needs the dataset: a
batch larger than the dataset with ``drop_last=True`` leaves an epoch
without an iteration. ``RTDETRv2EpochBasedTrainLoop`` calls it when it is
built (the annotation file is read then, no image yet), before mmengine
would fail in the warm-up scheduler without saying why.

A key that is absent from the config is not checked (its default applies;
the class that reads it validates its own arguments). Other detectors'
configs (``configs/comparison``) go through the same table: the keys they
share (batch sizes, ``max_epochs``, loss weights) are checked alike.

NOTE: mmengine checks several of these values itself, but deep inside the
build with an ``AssertionError`` and without the key (``accumulative_counts``
0, an EMA momentum outside (0, 1)), or not at all (``max_epochs=0`` trains
nothing and exits 0); the table states each range once, with the reason.
"""
import math
from numbers import Real
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

from mmengine.config import Config

from .image_size import check_image_size


class RunSettingsError(ValueError):
    """Settings of a run out of their valid range; the message lists each
    offending config key with its value and the valid range."""


class Rule(NamedTuple):
    """One config key and its valid values.

    Attributes:
        key (str): Dotted config path; ``[*]`` stands for every element of a
            list (``param_scheduler[*].warmup_ratio``).
        check (Callable[[Any], Optional[str]]): Returns None for a valid
            value, else what is valid (``'a number in [0, 1]'``).
        why (str): What a value out of range would do; appended to the error.
    """
    key: str
    check: Callable[[Any], Optional[str]]
    why: str = ''


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def number(low: Optional[float] = None, high: Optional[float] = None, *,
           low_open: bool = False, high_open: bool = False, integer: bool = False,
           optional: bool = False) -> Callable[[Any], Optional[str]]:
    """A check for a (finite) number within ``[low, high]`` (each end
    excluded when ``*_open``), an ``int`` when ``integer``, None allowed when
    ``optional``."""
    kind = 'an integer' if integer else 'a number'
    lo = '' if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = '' if high is None else f"{'<' if high_open else '<='} {high:g}"
    if lo and hi:
        valid = f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    else:
        valid = ' '.join(part for part in (kind, lo or hi) if part)
    if optional:
        valid += ' or None'

    def check(value: Any) -> Optional[str]:
        if value is None and optional:
            return None
        if not _is_number(value) or (integer and not isinstance(value, int)):
            return valid
        if low is not None and (value < low or (low_open and value == low)):
            return valid
        if high is not None and (value > high or (high_open and value == high)):
            return valid
        return None
    return check


def boolean(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else 'True or False'


def image_size(value: Any) -> Optional[str]:
    try:
        check_image_size(value)
    except ValueError as error:
        nearest = str(error).partition('nearest valid: ')[2]
        return ('an int or (h, w), each side a positive multiple of 32 (the largest feature '
                'stride)'
                + (f'; nearest valid: {nearest}' if nearest else ''))
    return None


HEAD = 'model.bbox_head'
COSTS = 'model.train_cfg.assigner.match_costs[*]'

#: Every key checked, in the order a config defines them.
RULES: Tuple[Rule, ...] = (
    # ------------------------------------------------------------- the model
    Rule(f'{HEAD}.num_classes', number(1, integer=True)),
    Rule(f'{HEAD}.num_queries', number(1, integer=True),
         'the head keeps num_queries detections per image'),
    Rule(f'{HEAD}.dn_cfg.num_denoising', number(0, integer=True),
         '0 turns denoising off'),
    Rule(f'{HEAD}.dn_cfg.label_noise_ratio', number(0, 1)),
    Rule(f'{HEAD}.dn_cfg.box_noise_scale', number(0)),
    # FOCAL_ALPHA / FOCAL_GAMMA (None: the loss type's default)
    Rule('model.test_cfg.score_thr', number(0, 1, optional=True),
         'detections scoring above it are kept (None: all top-k)'),
    Rule('model.test_cfg.nms.iou_threshold', number(0, 1, low_open=True),
         'a box overlapping a higher-scoring one of its class by more is removed'),
    Rule('model.test_cfg.nms.class_agnostic', boolean),
    Rule(f'{HEAD}.loss_cls.alpha', number(0, 1, optional=True),
         'alpha weights the positive term and 1 - alpha the negative one: '
         'above 1 the negative term changes sign and the loss goes negative'),
    Rule(f'{HEAD}.loss_cls.gamma', number(0, optional=True),
         'a negative gamma turns the focusing factor (1 - p)^gamma into a '
         'divisor: the loss of confident predictions explodes'),
    Rule(f'{HEAD}.loss_cls.eos_coef', number(0),
         'EOS_COEF weights the rows of unmatched queries; 1.0 = official'),
    Rule(f'{HEAD}.loss_cls.label_smoothing', number(0, 1, high_open=True),
         'LABEL_SMOOTHING_IN_MODEL: 1 would make every target uniform'),
    Rule(f'{HEAD}.loss_cls.loss_weight', number(0), 'CLASS_LOSS_COEF'),
    Rule(f'{HEAD}.loss_bbox.loss_weight', number(0)),
    Rule(f'{HEAD}.loss_iou.loss_weight', number(0)),
    # MATCHER_CLASS_COST / MATCHER_BBOX_COST and the other matching costs
    Rule(f'{COSTS}.weight', number(0),
         'a negative cost weight makes the matcher prefer the worst pairs'),
    Rule(f'{COSTS}.alpha', number(0, 1)),
    Rule(f'{COSTS}.gamma', number(0)),
    # ---------------------------------------------------- data and its size
    Rule('image_size', image_size),
    Rule('train_dataloader.batch_size', number(1, integer=True), 'TRAIN_BATCH per GPU'),
    Rule('val_dataloader.batch_size', number(1, integer=True), 'VAL_BATCH per GPU'),
    Rule('test_dataloader.batch_size', number(1, integer=True)),
    Rule('train_dataloader.num_workers', number(0, integer=True)),
    Rule('val_dataloader.num_workers', number(0, integer=True)),
    Rule('test_dataloader.num_workers', number(0, integer=True)),
    Rule('train_dataloader.drop_last', boolean),
    # ------------------------------------------------------- the optimisation
    Rule('optim_wrapper.accumulative_counts', number(1, integer=True),
         'GRAD_ACCUM: an optimizer step every N micro-batches (1 = every batch)'),
    Rule('optim_wrapper.optimizer.lr', number(0, low_open=True), 'LEARNING_RATE'),
    Rule('optim_wrapper.optimizer.weight_decay', number(0), 'WEIGHT_DECAY'),
    Rule('optim_wrapper.clip_grad.max_norm', number(0, low_open=True)),
    Rule('optim_wrapper.allow_cpu_fp16', boolean,
         'fp16 + loss scaling on the CPU: emulated on most CPUs (for testing the scaler); '
         'bfloat16 is the CPU choice'),
    Rule('optim_wrapper.init_scale', number(0, low_open=True),
         'the first fp16 loss scale (GradScaler init_scale)'),
    Rule('param_scheduler[*].warmup_ratio', number(0, 1, low_open=True, optional=True),
         'WARMUP_RATIO: the share of all optimizer steps spent warming up'),
    Rule('param_scheduler[*].warmup_steps', number(1, integer=True, optional=True)),
    Rule('train_cfg.max_epochs', number(1, integer=True),
         'EPOCHS: 0 epochs would train nothing'),
    Rule('train_cfg.val_interval', number(0, low_open=True),
         'EVAL_RATE_EPOCHS: epochs between validations (0.5 = twice per epoch)'),
    Rule('train_cfg.val_begin', number(0, integer=True)),
    # ------------------------------------------------------------ evaluators
    Rule('val_evaluator[*].score_thr', number(0, 1, optional=True),
         'OperatingPointMetric: the score threshold of the reported operating point'),
    Rule('val_evaluator[*].iou_thr', number(0, 1, low_open=True, optional=True)),
    Rule('test_evaluator[*].score_thr', number(0, 1, optional=True)),
    Rule('test_evaluator[*].iou_thr', number(0, 1, low_open=True, optional=True)),
    # ---------------------------------------------------------------- hooks
    Rule('default_hooks.ema.momentum', number(0, 1, low_open=True, high_open=True),
         'the EMA keeps (1 - momentum) of itself per step; official 1e-4'),
    Rule('default_hooks.ema.warmup_steps', number(1, integer=True, optional=True)),
    Rule('default_hooks.checkpoint.interval', number(1, integer=True)),
    Rule('default_hooks.logger.interval', number(1, integer=True)),
    # EarlyStoppingHook (mmengine checks neither; its monitor is checked
    # against the metrics at the first validation: RTDETRv2EpochBasedTrainLoop)
    Rule('custom_hooks[*].patience', number(1, integer=True),
         'EarlyStoppingHook: validations without improvement before the run stops'),
    Rule('custom_hooks[*].min_delta', number(0),
         'EarlyStoppingHook: the least gain that counts as an improvement'),
)


def _lookup(node: Any, parts: List[str], prefix: str) -> Iterator[Tuple[str, Any]]:
    """Yield ``(concrete key, value)`` for every place ``parts`` names that
    exists in ``node`` (``[*]`` expands over a list)."""
    if not parts:
        yield prefix, node
        return
    head, rest = parts[0], parts[1:]
    name, star = (head[:-3], True) if head.endswith('[*]') else (head, False)
    if not hasattr(node, 'get') or not hasattr(node, 'keys') or name not in node.keys():
        return
    value = node.get(name)
    key = f'{prefix}.{name}' if prefix else name
    if not star:
        yield from _lookup(value, rest, key)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _lookup(item, rest, f'{key}[{index}]')
    elif value is not None:  # one scheduler written as a dict
        yield from _lookup(value, rest, key)


def run_settings_problems(cfg: Config) -> List[str]:
    """Every violation of :data:`RULES` in ``cfg``, one line each:
    ``'<key>=<value>: must be <valid> (<why>)'``."""
    problems = []
    for rule in RULES:
        for key, value in _lookup(cfg, rule.key.split('.'), ''):
            valid = rule.check(value)
            if valid is not None:
                why = f' ({rule.why})' if rule.why else ''
                problems.append(f'{key}={value!r}: must be {valid}{why}')
    return problems


def check_run_settings(cfg: Config) -> None:
    """Raise :class:`RunSettingsError` listing every setting of ``cfg``
    outside its valid range (see :data:`RULES`); return None otherwise."""
    problems = run_settings_problems(cfg)
    if problems:
        source = f' in {cfg.filename}' if getattr(cfg, 'filename', None) else ''
        lines = '\n  '.join(problems)
        raise RunSettingsError(f'{len(problems)} run setting(s) out of range{source} '
                               f'(after --cfg-options):\n  {lines}')


def epoch_length_problem(num_images: int, batch_size: int, drop_last: bool,
                         world_size: int = 1) -> Optional[str]:
    """Why an epoch of ``num_images`` would have no iteration, or None.

    mmengine's samplers give each of ``world_size`` processes
    ``ceil(num_images / world_size)`` images; a batch sampler with
    ``drop_last`` drops each process's last incomplete batch.
    """
    per_rank = math.ceil(num_images / max(1, world_size))
    iterations = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    if iterations >= 1:
        return None
    if num_images == 0:
        return 'the training dataset has 0 images'
    ranks = f' ({per_rank} on each of {world_size} processes)' if world_size > 1 else ''
    return (f'train_dataloader.batch_size={batch_size} with drop_last=True leaves 0 '
            f'iterations per epoch: the dataset has {num_images} images{ranks}; lower the '
            'batch size or set train_dataloader.drop_last=False')
