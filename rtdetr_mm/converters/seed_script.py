"""Carry the settings of a transformers ``Trainer`` script (the "seed
script", e.g. ``train_model_finetuned.py``) over to an rtdetr_mm config.

Reading (:func:`read_script`, :func:`read_constants`): the script is parsed
with :mod:`ast` and never executed. Every top-level assignment (``X = ...``,
``X: float = ...``, ``A, B = 1, 2``, ``X *= 2``) whose value can be
evaluated is a constant: literals, tuples / lists / dicts, ``True`` /
``False`` / ``None``, arithmetic (``2e-5 * 4``, ``-x``, ``a // b``), names
defined earlier in the file, ``X[0]`` / ``D['k']`` on such values, f-strings,
``os.path.join`` and the pure builtins ``int float bool str tuple list dict
min max round abs len``. The entries of a top-level ``dict(...)`` / ``{...}``
with string keys are constants too (``CFG = dict(EPOCHS=60)`` gives
``EPOCHS``). Anything else (a call into the script's libraries,
``os.environ``) is not evaluated: the name is reported as unreadable with
its line.
"""
import ast
import difflib
import operator
import os.path as osp
import re
import tempfile
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from mmengine.config import Config

from ..engine.runner.image_size import SIZE_DIVISOR, check_image_size
from ..engine.runner.run_settings import boolean, run_settings_problems


class SeedScriptError(ValueError):
    """The seed script cannot be read (names the file and the problem)."""


class ScriptConstants(NamedTuple):
    """What :func:`read_script` found at the top level of a script.

    Attributes:
        values (dict[str, Any]): name -> evaluated value, in file order (a
            dict's entries follow the dict's own name).
        lines (dict[str, int]): name -> 1-based line of its (last) assignment.
        unreadable (dict[str, int]): names assigned a value the reader does
            not evaluate -> line (they are not in ``values``).
    """
    values: Dict[str, Any]
    lines: Dict[str, int]
    unreadable: Dict[str, int]


class _NotEvaluable(Exception):
    """An expression outside what :class:`_Evaluator` evaluates."""


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_BUILTINS = {'int': int, 'float': float, 'bool': bool, 'str': str, 'tuple': tuple,
             'list': list, 'dict': dict, 'min': min, 'max': max, 'round': round, 'abs': abs,
             'len': len}
_NAMES = {'True': True, 'False': False, 'None': None}
#: guards against ``10 ** 10 ** 9`` and ``'x' * 10 ** 9`` in a script
_MAX_EXPONENT, _MAX_LENGTH = 1000, 100_000


class _Evaluator:
    """Evaluates the expressions listed in the module docstring against the
    constants defined so far; raises :class:`_NotEvaluable` otherwise."""

    def __init__(self, known: Dict[str, Any]) -> None:
        self.known = known

    def __call__(self, node: ast.AST) -> Any:
        method = getattr(self, f'_{type(node).__name__}', None)
        if method is None:
            raise _NotEvaluable(type(node).__name__)
        value = method(node)
        if isinstance(value, (str, tuple, list, dict)) and len(value) > _MAX_LENGTH:
            raise _NotEvaluable('too long')
        return value

    def _Constant(self, node):
        return node.value

    def _Name(self, node):
        if node.id in self.known:
            return self.known[node.id]
        if node.id in _NAMES:
            return _NAMES[node.id]
        raise _NotEvaluable(node.id)

    def _Tuple(self, node):
        return tuple(self._items(node.elts))

    def _List(self, node):
        return list(self._items(node.elts))

    def _items(self, nodes):
        for item in nodes:
            if isinstance(item, ast.Starred):
                yield from self(item.value)
            else:
                yield self(item)

    def _Dict(self, node):
        result = {}
        for key, value in zip(node.keys, node.values):
            if key is None:  # {**other}
                result.update(self(value))
            else:
                result[self(key)] = self(value)
        return result

    def _UnaryOp(self, node):
        if type(node.op) not in _UNARY:
            raise _NotEvaluable('operator')
        return _UNARY[type(node.op)](self(node.operand))

    def _BinOp(self, node):
        if type(node.op) not in _BINARY:
            raise _NotEvaluable('operator')
        left, right = self(node.left), self(node.right)
        if isinstance(node.op, ast.Pow) and (not isinstance(right, (int, float))
                                             or abs(right) > _MAX_EXPONENT):
            raise _NotEvaluable('exponent')
        if isinstance(node.op, ast.Mult) and any(
                isinstance(v, int) and abs(v) > _MAX_LENGTH for v in (left, right)) and any(
                isinstance(v, (str, tuple, list)) for v in (left, right)):
            raise _NotEvaluable('too long')
        try:
            return _BINARY[type(node.op)](left, right)
        except (TypeError, ValueError, ArithmeticError) as err:
            raise _NotEvaluable(str(err))

    def _Subscript(self, node):
        try:
            return self(node.value)[self(node.slice)]
        except (TypeError, KeyError, IndexError) as err:
            raise _NotEvaluable(str(err))

    def _Slice(self, node):
        return slice(*(None if part is None else self(part)
                       for part in (node.lower, node.upper, node.step)))

    def _JoinedStr(self, node):
        parts = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if part.conversion != -1 or part.format_spec is not None:
                    raise _NotEvaluable('format')
                parts.append(str(self(part.value)))
            else:
                parts.append(self(part))
        return ''.join(parts)

    def _Call(self, node):
        func = node.func
        if isinstance(func, ast.Name) and func.id in _BUILTINS and func.id not in self.known:
            function = _BUILTINS[func.id]
        elif ast.unparse(func) in ('os.path.join', 'osp.join', 'path.join'):
            function = osp.join
        else:
            raise _NotEvaluable('call')
        args = list(self._items(node.args))
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                kwargs.update(self(keyword.value))
            else:
                kwargs[keyword.arg] = self(keyword.value)
        try:
            return function(*args, **kwargs)
        except (TypeError, ValueError, ArithmeticError) as err:
            raise _NotEvaluable(str(err))


def _targets(target: ast.AST):
    """Names bound by an assignment target (``a`` / ``a, b``) as
    ``(name, index path)``; other targets (``x.y``, ``x[0]``) bind none."""
    if isinstance(target, ast.Name):
        return [(target.id, ())]
    if isinstance(target, (ast.Tuple, ast.List)) and \
            not any(isinstance(e, ast.Starred) for e in target.elts):
        return [(name, (i,) + path) for i, element in enumerate(target.elts)
                for name, path in _targets(element)]
    return []


def read_script(path: str) -> ScriptConstants:
    """Read the top-level constants of the Python script ``path`` without
    running it (see the module docstring for what is evaluated).

    Raises:
        SeedScriptError: the file cannot be read or is not valid Python
            (naming the file and the line).
    """
    try:
        with open(path, encoding='utf-8') as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise SeedScriptError(f'cannot read the seed script {path}: {err}') from err
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        raise SeedScriptError(f'{path} is not valid Python (line {err.lineno}: {err.msg}); '
                              'the seed script is read, not run, but it must parse') from err
    values: Dict[str, Any] = {}
    lines: Dict[str, int] = {}
    unreadable: Dict[str, int] = {}
    evaluate = _Evaluator(values)

    def bind(name, value, line, readable=True):
        for table in (values, lines, unreadable):
            table.pop(name, None)
        lines[name] = line
        if not readable:
            unreadable[name] = line
            return
        values[name] = value
        if isinstance(value, dict):  # CFG = dict(EPOCHS=60): EPOCHS is a constant too
            for key, item in value.items():
                if isinstance(key, str) and key.isidentifier():
                    bind(key, item, line)

    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, node = [t for target in statement.targets for t in _targets(target)], \
                statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, node = _targets(statement.target), statement.value
        elif isinstance(statement, ast.AugAssign) and isinstance(statement.target, ast.Name):
            name = statement.target.id
            targets = [(name, ())]
            node = ast.BinOp(left=ast.Name(id=name, ctx=ast.Load()), op=statement.op,
                             right=statement.value)
        else:
            continue
        try:
            value, readable = evaluate(node), True
        except (_NotEvaluable, RecursionError):
            value, readable = None, False
        for name, index in targets:
            item, ok = value, readable
            try:
                for i in index:
                    item = item[i]
            except (TypeError, IndexError, KeyError):
                ok = False
            bind(name, item, statement.lineno, ok)
    return ScriptConstants(values, lines, unreadable)


def read_constants(path: str) -> Dict[str, Any]:
    """Every top-level constant of the script ``path`` that can be evaluated
    without running it: name -> value (see :func:`read_script`)."""
    return read_script(path).values


# ======================================================================
# From constants to config keys
# ======================================================================
#: said of the knobs that the transformers script wrote to config fields its
#: model never read (README, "Fine-tuning knobs", notes)
NOW_ACTS = ('in the transformers script this had no effect (its model never read it); '
            'here it acts')


class Refused(ValueError):
    """A constant whose value cannot be carried over (the message names the
    constant, its value and why)."""


class Mapped(NamedTuple):
    """What one constant becomes.

    Attributes:
        writes (dict[str, Any]): dotted config key (``.0.`` for a list
            item, as in ``--cfg-options``) -> value.
        notes (list[str]): where the meaning differs from the script.
        warnings (list[str]): values that make training go wrong.
    """
    writes: Dict[str, Any]
    notes: List[str] = []
    warnings: List[str] = []


class Knob(NamedTuple):
    """One row of :data:`KNOBS`.

    Attributes:
        constant (str): Name in the seed script.
        keys (tuple[str, ...]): The config keys it sets (README's "Config
            key" column), for the report of a missing constant.
        convert (Callable[[Any, _Context], Mapped]): value -> what it sets;
            raises :class:`Refused`.
        aliases (tuple[str, ...]): Other names recognised for it.
    """
    constant: str
    keys: Tuple[str, ...]
    convert: Callable[[Any, '_Context'], Mapped]
    aliases: Tuple[str, ...] = ()


class _Context(NamedTuple):
    """What a conversion may look at besides its own value."""
    constants: Dict[str, Any]   # recognised constants (canonical name -> value)
    base: Config                # the base config, merged
    fix_image_size: bool


HEAD_LOSS = 'model.bbox_head.loss_cls'
COSTS = 'model.train_cfg.assigner.match_costs'
#: (index, mmdet type) of the matching costs the knobs address
COST_TYPES = ((0, 'FocalLossCost'), (1, 'BBoxL1Cost'), (2, 'IoUCost'))


def _same(*keys: str) -> Callable[[Any, _Context], Mapped]:
    def convert(value, ctx):
        return Mapped({key: value for key in keys})
    return convert


def _integral(*keys: str) -> Callable[[Any, _Context], Mapped]:
    """``60.0`` -> ``60`` (transformers takes float epochs; the loop counts
    whole epochs); anything else goes to the run-settings check as is."""
    def convert(value, ctx):
        if isinstance(value, float) and value.is_integer():
            return Mapped({key: int(value) for key in keys},
                          [f'{value!r} written as the integer {int(value)}'])
        return Mapped({key: value for key in keys})
    return convert


def _flag(constant: str, value: Any) -> bool:
    problem = boolean(value)
    if problem is not None:
        raise Refused(f'{constant}={value!r}: must be {problem}')
    return value


def _learning_rate(value, ctx):
    groups = _backbone_groups(ctx.base)
    mults = sorted({g.get('lr_mult', 1.0) for g in groups})
    backbone = (f'the backbone trains at lr x {mults[0]:g} (base config parameter groups); '
                'BACKBONE_LR sets its own value') if len(mults) == 1 else \
        'the backbone groups keep their multipliers of it; BACKBONE_LR sets their value'
    return Mapped({'optim_wrapper.optimizer.lr': value},
                  [f'the head lr (encoder, decoder, score/box heads and the re-initialised class '
                   f'layers); {backbone}'])


def _backbone_groups(base: Config) -> list:
    groups = (base.optim_wrapper.get('paramwise_cfg') or {}).get('groups') or []
    return [g for g in groups if str(g.get('regex', '')).startswith('^backbone')]


def _backbone_lr(value, ctx):
    lr = ctx.constants.get('LEARNING_RATE', ctx.base.optim_wrapper.optimizer.lr)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
               for v in (value, lr)):
        raise Refused(f'BACKBONE_LR={value!r} with LEARNING_RATE={lr!r}: both must be '
                      'numbers > 0 (the backbone multiplier is BACKBONE_LR / LEARNING_RATE)')
    groups = (ctx.base.optim_wrapper.get('paramwise_cfg') or {}).get('groups') or []
    if not _backbone_groups(ctx.base):
        raise Refused(f'BACKBONE_LR={value!r}: the base config {ctx.base.filename} has no '
                      "parameter group whose regex starts with '^backbone' to give it")
    mult = _tidy(value / lr)
    written = [dict(g, lr_mult=mult) if g in _backbone_groups(ctx.base) else dict(g)
               for g in groups]
    return Mapped({'optim_wrapper.paramwise_cfg.groups': written},
                  [f'every backbone parameter group at lr_mult = BACKBONE_LR / LEARNING_RATE = '
                   f'{mult:g}; the re-initialised class layers (encoder score head, denoising '
                   'embedding) train at the head lr, not in the backbone group as the '
                   "script's optimizer had them"])


def _warmup_ratio(value, ctx):
    return Mapped({'param_scheduler.0.warmup_ratio': value},
                  ['share of all optimizer steps (as the Trainer counts them); after the '
                   'warm-up the lr stays constant (official RT-DETRv2), where the '
                   "Trainer's default 'linear' schedule decayed it to 0"
                   + ('' if value is not None else '; None: warmup_steps applies')])


def _fp16(value, ctx):
    if not _flag('USE_FP16', value) or ctx.constants.get('USE_BF16') is True:
        return Mapped({})  # USE_BF16 reports both set
    return Mapped({'optim_wrapper.type': 'RTDETRv2AmpOptimWrapper',
                   'optim_wrapper.dtype': 'float16'},
                  ['fp16 autocast with dynamic loss scaling on CUDA (on a CPU-only machine '
                   'prefer USE_BF16); the losses stay fp32'])


def _bf16(value, ctx):
    if not _flag('USE_BF16', value):
        return Mapped({})
    if ctx.constants.get('USE_FP16') is True:
        raise Refused('USE_FP16=True and USE_BF16=True: choose one precision (bf16 runs on CPU '
                      'and GPU, fp16 with loss scaling on CUDA)')
    return Mapped({'optim_wrapper.type': 'RTDETRv2AmpOptimWrapper',
                   'optim_wrapper.dtype': 'bfloat16'},
                  ['bf16 autocast on CPU or GPU; the losses stay fp32'])


def _image_size(value, ctx):
    note = ['(height, width) of training and evaluation input: one key moves every Resize '
            'and the multi-scale range']
    try:
        height, width = check_image_size(value, key='IMAGE_SIZE')
    except ValueError as err:
        if not ctx.fix_image_size or not _is_int_size(value):
            raise Refused(f'{err}; nothing written (--fix-image-size uses the nearest valid '
                          'size)') from err
        height, width = (_nearest_size(v) for v in
                         ((value, value) if isinstance(value, int) else value))
        note.append(f'{value!r} is not a multiple of {SIZE_DIVISOR}: written as the nearest '
                    f'valid size ({height}, {width}) (--fix-image-size)')
    return Mapped({'image_size': (height, width)}, note)


def _is_int_size(value) -> bool:
    values = value if isinstance(value, (tuple, list)) and len(value) == 2 else (value,)
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def _nearest_size(value: int) -> int:
    """The multiple of 32 nearest ``value`` (a tie goes up), at least 32."""
    return max(SIZE_DIVISOR, (value + SIZE_DIVISOR // 2) // SIZE_DIVISOR * SIZE_DIVISOR)


def _eval_rate(value, ctx):
    return Mapped({'train_cfg.val_interval': value},
                  ['a fraction validates at evenly spaced iterations inside each epoch and '
                   'saves a resumable iter_<n>.pth there'])


def _use_focal(value, ctx):
    loss_type = 'vfl' if _flag('USE_FOCAL_LOSS', value) else 'bce'
    return Mapped({f'{HEAD_LOSS}.loss_type': loss_type},
                  ["True -> 'vfl' (the official RT-DETRv2 loss; set 'focal' for plain sigmoid "
                   "focal loss), False -> 'bce'"])


def _focal(name: str, key: str) -> Callable[[Any, _Context], Mapped]:
    def convert(value, ctx):
        if ctx.constants.get('USE_FOCAL_LOSS') is False:
            return Mapped({}, [f"USE_FOCAL_LOSS=False selects 'bce', which has no {name}: "
                               'not written'])
        notes = [NOW_ACTS]
        if name == 'alpha' and value is not None and \
                ctx.constants.get('USE_FOCAL_LOSS', True) is True:
            notes.append("with the default 'vfl' loss the official alpha is 0.75; "
                         f"{value!r} is focal loss's value (None: each loss's default)")
        return Mapped({key: value}, notes)
    return convert


def _eos_coef(value, ctx):
    warnings = []
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 0.1:
        warnings.append(
            f'EOS_COEF={value!r} scales the "no-object" terms (the classification loss of '
            'queries matched to no object, denoising negatives included) by '
            f'{value:g}: almost nothing pushes background scores down, so the model scores '
            'background highly (confident false positives everywhere). 1.0 is the official '
            'loss; set EOS_COEF = 1.0 unless you mean it')
    return Mapped({f'{HEAD_LOSS}.eos_coef': value}, [NOW_ACTS], warnings)


def _class_loss_coef(value, ctx):
    warnings = ['CLASS_LOSS_COEF=0 turns the classification loss off: the model never '
                'learns the classes'] if value == 0 and not isinstance(value, bool) else []
    return Mapped({f'{HEAD_LOSS}.loss_weight': value}, [NOW_ACTS], warnings)


def _cost(index: int, note: str) -> Callable[[Any, _Context], Mapped]:
    def convert(value, ctx):
        return Mapped({f'{COSTS}.{index}.weight': value}, [note] if note else [])
    return convert


#: Each seed-script constant -> config keys (README, "Fine-tuning knobs").
#: The 18 knobs first, then the extra names this tool recognises.
KNOBS: Tuple[Knob, ...] = (
    Knob('TRAIN_BATCH', ('train_dataloader.batch_size',), _same('train_dataloader.batch_size')),
    Knob('VAL_BATCH', ('val_dataloader.batch_size', 'test_dataloader.batch_size'),
         _same('val_dataloader.batch_size', 'test_dataloader.batch_size')),
    Knob('GRAD_ACCUM', ('optim_wrapper.accumulative_counts',),
         _same('optim_wrapper.accumulative_counts')),
    Knob('EPOCHS', ('train_cfg.max_epochs',), _integral('train_cfg.max_epochs')),
    Knob('LEARNING_RATE', ('optim_wrapper.optimizer.lr',), _learning_rate),
    Knob('WEIGHT_DECAY', ('optim_wrapper.optimizer.weight_decay',),
         _same('optim_wrapper.optimizer.weight_decay')),
    Knob('WARMUP_RATIO', ('param_scheduler.0.warmup_ratio',), _warmup_ratio),
    Knob('USE_FP16', ('optim_wrapper.type', 'optim_wrapper.dtype'), _fp16),
    Knob('USE_BF16', ('optim_wrapper.type', 'optim_wrapper.dtype'), _bf16),
    Knob('IMAGE_SIZE', ('image_size',), _image_size),
    Knob('EVAL_RATE_EPOCHS', ('train_cfg.val_interval',), _eval_rate),
    Knob('USE_FOCAL_LOSS', (f'{HEAD_LOSS}.loss_type',), _use_focal),
    Knob('FOCAL_GAMMA', (f'{HEAD_LOSS}.gamma',), _focal('gamma', f'{HEAD_LOSS}.gamma')),
    Knob('FOCAL_ALPHA', (f'{HEAD_LOSS}.alpha',), _focal('alpha', f'{HEAD_LOSS}.alpha')),
    Knob('LABEL_SMOOTHING_IN_MODEL', (f'{HEAD_LOSS}.label_smoothing',),
         lambda value, ctx: Mapped({f'{HEAD_LOSS}.label_smoothing': value}, [NOW_ACTS])),
    Knob('EOS_COEF', (f'{HEAD_LOSS}.eos_coef',), _eos_coef),
    Knob('MATCHER_CLASS_COST', (f'{COSTS}.0.weight',),
         _cost(0, 'the class cost keeps its own alpha / gamma (match_costs.0.alpha / .gamma)')),
    Knob('MATCHER_BBOX_COST', (f'{COSTS}.1.weight',),
         _cost(1, 'the L1 box cost; the GIoU cost is match_costs.2.weight (MATCHER_GIOU_COST)')),
    Knob('CLASS_LOSS_COEF', (f'{HEAD_LOSS}.loss_weight',), _class_loss_coef),
    # ---- recognised besides the 18
    Knob('BACKBONE_LR', ('optim_wrapper.paramwise_cfg.groups',), _backbone_lr,
         ('BACKBONE_LEARNING_RATE', 'LR_BACKBONE')),
    Knob('MATCHER_GIOU_COST', (f'{COSTS}.2.weight',), _cost(2, '')),
)
#: the constants of the seed script (reported when missing); the others of
#: :data:`KNOBS` are recognised but not expected
SEED_KNOBS = tuple(k.constant for k in KNOBS
                   if k.constant not in ('BACKBONE_LR', 'MATCHER_GIOU_COST'))

#: The dataset block of the fine-tuning configs: variable -> the constant
#: names recognised for it (first found wins).
DATASET_CONSTANTS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ('data_root', ('DATA_ROOT', 'DATASET_ROOT', 'DATASET_DIR', 'DATA_DIR')),
    ('train_ann_file', ('TRAIN_ANN', 'TRAIN_ANN_FILE', 'TRAIN_ANNOTATIONS', 'TRAIN_JSON')),
    ('train_img_dir', ('TRAIN_IMG_DIR', 'TRAIN_IMAGE_DIR', 'TRAIN_IMAGES_DIR', 'TRAIN_IMAGES')),
    ('val_ann_file', ('VAL_ANN', 'VAL_ANN_FILE', 'VAL_ANNOTATIONS', 'VAL_JSON')),
    ('val_img_dir', ('VAL_IMG_DIR', 'VAL_IMAGE_DIR', 'VAL_IMAGES_DIR', 'VAL_IMAGES')),
    ('classes', ('CLASSES', 'CLASS_NAMES', 'ID2LABEL')),
)


# ======================================================================
# The translation: constants -> a child config + what to tell the user
# ======================================================================
class Row(NamedTuple):
    """One recognised constant of the script and what it becomes."""
    constant: str      # canonical name (KNOBS)
    name: str          # as written in the script (an alias, maybe)
    value: Any
    line: int
    mapped: Mapped


class Translation(NamedTuple):
    """Everything :func:`translate` found; :func:`report_lines` prints it.

    Attributes:
        rows (list[Row]): the recognised constants that were read.
        missing (list[tuple[str, dict]]): seed constants the script lacks,
            with the base config's value of each of their keys (kept).
        unreadable (list[tuple[str, int]]): recognised constants the reader
            cannot evaluate without running the script, with their line.
        suggestions (list[tuple[str, int, str]]): (name, line, the known
            constant it resembles).
        ignored (list[str]): other UPPER_CASE constants (no config key).
        dataset (list[tuple[str, Any, str | None, int | None]]): the dataset
            block: (variable, value, constant or None, line or None); None:
            the base config's placeholder, to edit.
        refusals (list[str]): why nothing may be written (empty: written).
        text (str): the child config (empty when refused).
        edit_lines (list[tuple[int, str]]): lines of ``text`` (1-based) the
            user must still edit, with their variable.
    """
    script: str
    base: str
    rows: List[Row]
    missing: List[Tuple[str, Dict[str, Any]]]
    unreadable: List[Tuple[str, int]]
    suggestions: List[Tuple[str, int, str]]
    ignored: List[str]
    dataset: List[Tuple[str, Any, Optional[str], Optional[int]]]
    refusals: List[str]
    text: str
    edit_lines: List[Tuple[int, str]]


_MISSING = object()


def _get(cfg: Any, key: str) -> Any:
    """The value of a dotted key (``.0.`` indexes a list), or _MISSING."""
    node = cfg
    for part in key.split('.'):
        try:
            node = node[int(part)] if part.isdigit() else node[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _classes(name: str, value: Any) -> tuple:
    if name == 'ID2LABEL' and isinstance(value, dict) and \
            all(isinstance(k, int) for k in value) and \
            sorted(value) == list(range(len(value))):
        value = tuple(value[k] for k in sorted(value))
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value or \
            not all(isinstance(v, str) and v for v in value):
        raise Refused(f'{name}={value!r}: the class names must be a non-empty tuple or list '
                      'of strings, in label order (ID2LABEL: a dict {0: name, 1: name, ...})')
    return tuple(value)


def _check_base(base: Config) -> None:
    for index, kind in COST_TYPES:
        found = _get(base, f'{COSTS}.{index}.type')
        if found != kind:
            raise SeedScriptError(
                f'the base config {base.filename} has {COSTS}.{index}.type={found!r}, but the '
                f'knobs address a {kind} there; use a fine-tuning config of '
                'configs/rtdetrv2_finetune/')
    absent = [var for var, _ in DATASET_CONSTANTS if var not in base]
    if absent:
        raise SeedScriptError(
            f'the base config {base.filename} has no dataset block ({", ".join(absent)} '
            'missing); use a fine-tuning config of configs/rtdetrv2_finetune/')


def translate(script: str, base: str, out: str = 'my_config.py',
              fix_image_size: bool = False) -> Translation:
    """Read ``script`` (never run) and make the child config of ``base``.

    Args:
        script (str): Path of the transformers Trainer script.
        base (str): Path of the fine-tuning config to inherit
            (``configs/rtdetrv2_finetune/*.py``).
        out (str): Where the config will be written (its ``_base_`` is
            relative to that folder when the base lies below it).
        fix_image_size (bool): Replace an IMAGE_SIZE that is not a multiple
            of 32 by the nearest valid size instead of refusing it.

    Returns:
        Translation: ``refusals`` empty means ``text`` may be written.

    Raises:
        SeedScriptError: the script cannot be parsed, or ``base`` is not a
            fine-tuning config.
    """
    found = read_script(script)
    base_cfg = Config.fromfile(base)
    _check_base(base_cfg)

    def lookup(names):
        for name in names:
            if name in found.values or name in found.unreadable:
                return name
        return None

    rows, missing, unreadable, refusals = [], [], [], []
    constants: Dict[str, Any] = {}
    where: Dict[str, Tuple[str, int]] = {}
    for knob in KNOBS:
        name = lookup((knob.constant,) + knob.aliases)
        if name is None:
            if knob.constant in SEED_KNOBS:
                missing.append((knob.constant, {k: _get(base_cfg, k) for k in knob.keys}))
        elif name in found.unreadable:
            unreadable.append((knob.constant, found.unreadable[name]))
        else:
            constants[knob.constant] = found.values[name]
            where[knob.constant] = (name, found.lines[name])
    ctx = _Context(constants, base_cfg, fix_image_size)
    for knob in KNOBS:
        if knob.constant not in constants:
            continue
        name, line = where[knob.constant]
        value = constants[knob.constant]
        try:
            mapped = knob.convert(value, ctx)
        except Refused as err:
            refusals.append(f'{script}:{line}: {err}')
            continue
        rows.append(Row(knob.constant, name, value, line, mapped))

    dataset = []
    for var, names in DATASET_CONSTANTS:
        name = lookup(names)
        if name is None or name in found.unreadable:
            if name is not None:
                unreadable.append((name, found.unreadable[name]))
            dataset.append((var, base_cfg[var], None, None))
            continue
        value = found.values[name]
        try:
            if var == 'classes':
                value = _classes(name, value)
            elif not isinstance(value, str):
                raise Refused(f'{name}={value!r}: a path (str) is needed for {var}')
            elif var == 'data_root' and value and not value.endswith('/'):
                value += '/'  # the config joins data_root + val_ann_file
        except Refused as err:
            refusals.append(f'{script}:{found.lines[name]}: {err}')
            value, name = base_cfg[var], None
        dataset.append((var, value, name, found.lines.get(name)))

    known = {n: k.constant for k in KNOBS for n in (k.constant,) + k.aliases}
    known.update({n: n for _, names in DATASET_CONSTANTS for n in names})
    present = set(constants) | {c for _, _, c, _ in dataset if c} | {c for c, _ in unreadable}
    containers = {n for n, v in found.values.items() if isinstance(v, dict) and
                  any(isinstance(k, str) and k.isidentifier() for k in v)}
    suggestions, ignored = [], []
    for name in list(found.values) + list(found.unreadable):
        if name in known or name in containers:
            continue
        close = difflib.get_close_matches(name.upper(), list(known), n=1, cutoff=0.8)
        if close and known[close[0]] not in present:
            suggestions.append((name, found.lines[name], close[0]))
        elif re.fullmatch(r'[A-Z][A-Z0-9_]*', name):
            ignored.append(name)

    text, edit_lines = '', []
    if not refusals:
        writes = _writes(rows, dataset)
        with tempfile.TemporaryDirectory() as tmp:
            check_file = osp.join(tmp, 'seed_config.py')
            with open(check_file, 'w') as f:
                f.write(_render(writes, base_cfg, osp.abspath(base), script, dataset)[0])
            problems = run_settings_problems(Config.fromfile(check_file))
        for problem in problems:
            key = re.sub(r'\[(\d+)\]', r'.\1', problem.partition('=')[0])
            row = next((r for r in rows if key in r.mapped.writes), None)
            source = f'{script}:{row.line}: {row.name}={row.value!r} -> ' if row else ''
            refusals.append(f'{source}{problem}')
    if not refusals:
        text, edit_lines = _render(writes, base_cfg, _base_reference(base, osp.dirname(out) or '.'),
                                    script, dataset)
    return Translation(script, base, rows, missing, unreadable, suggestions, ignored, dataset,
                       refusals, text, edit_lines)


def _base_reference(base: str, out_dir: str) -> str:
    """``base`` relative to the written config's folder when that stays
    inside it (a checkout), else absolute."""
    relative = osp.relpath(osp.abspath(base), osp.abspath(out_dir))
    return osp.abspath(base) if relative.startswith('..') else relative


# ---------------------------------------------------------------- rendering
class _Leaf(NamedTuple):
    source: str                # Python text of the value
    comment: Optional[str]


def _writes(rows: List[Row], dataset) -> Dict[str, _Leaf]:
    """Every key the child config sets -> its text and comment."""
    writes: Dict[str, _Leaf] = {}
    writes['model.bbox_head.num_classes'] = _Leaf('len(classes)', None)
    val_ann = next(v for var, v, _, _ in dataset if var == 'val_ann_file')
    for split, ann, img in (('train', 'train_ann_file', 'train_img_dir'),
                            ('val', 'val_ann_file', 'val_img_dir'),
                            ('test', 'val_ann_file', 'val_img_dir')):
        for key, source in (('data_root', 'data_root'), ('ann_file', ann),
                            ('data_prefix.img', img), ('metainfo', 'metainfo')):
            writes[f'{split}_dataloader.dataset.{key}'] = _Leaf(source, None)
    evaluator = 'val_ann_file' if osp.isabs(val_ann) else 'data_root + val_ann_file'
    writes['val_evaluator.ann_file'] = _Leaf(evaluator, None)
    writes['test_evaluator.ann_file'] = _Leaf(evaluator, None)
    for row in rows:
        origin = f'{row.name} = {_show(row.value)} (line {row.line})'
        for key, value in row.mapped.writes.items():
            comment = origin if value == row.value else f'{origin} -> {_show(value)}'
            if row.constant in ('USE_FP16', 'USE_BF16', 'BACKBONE_LR'):
                comment = origin
            writes[key] = _Leaf(_source(value), comment)
    return writes


def _tidy(value: float) -> float:
    """``1e-06 / 1e-05`` -> ``0.1`` (not 0.09999999999999999)."""
    return float(f'{value:.12g}')


def _show(value: Any) -> str:
    """``repr`` with floats at 12 significant digits (``1e-06``)."""
    if isinstance(value, float):
        return repr(_tidy(value))
    if isinstance(value, tuple):
        return '(' + ', '.join(map(_show, value)) + (',)' if len(value) == 1 else ')')
    return repr(value)


def _source(value: Any, indent: str = '') -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = ''.join(f'{indent}    dict({", ".join(f"{k}={v!r}" for k, v in d.items())}),\n'
                        for d in value)
        return f'[\n{items}{indent}]'
    return repr(value)


#: top-level keys of the written config, in this order (others follow)
_ORDER = ('image_size', 'model', 'train_dataloader', 'val_dataloader', 'test_dataloader',
          'val_evaluator', 'test_evaluator', 'train_cfg', 'optim_wrapper', 'param_scheduler')


def _render(writes: Dict[str, _Leaf], base: Config, base_ref: str, script: str,
            dataset) -> Tuple[str, List[Tuple[int, str]]]:
    """The child config's text and the lines the user must still edit."""
    tree: Dict[str, Any] = {}
    for key, leaf in writes.items():
        node = tree
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = leaf

    lines = [
        f'# Written by tools/misc/seed_to_config.py from {script}',
        '# (read, never run). Each key below names the constant it came from;',
        '# everything else is the base config (README, "Fine-tuning knobs").',
        f'_base_ = {base_ref!r}',
        '',
        '# ----------------------------- Your dataset --------------------------------',
    ]
    edit_lines = []
    for var, value, constant, line in dataset:
        if constant:
            comment = f'{constant} (line {line})'
        else:
            comment = 'EDIT: not in the script (the base config\'s placeholder)'
            edit_lines.append((len(lines) + 1, var))
        lines.append(f'{var} = {value!r}  # {comment}')
    lines += ['# ' + '-' * 75, 'metainfo = dict(classes=classes)', '']
    for name in sorted(tree, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER))):
        node = tree[name]
        if isinstance(node, _Leaf):
            lines.append(f'{name} = {node.source}' +
                         (f'  # {node.comment}' if node.comment else ''))
        else:
            lines.append(f'{name} = {_render_node(node, [name], base, "")}')
    return '\n'.join(lines) + '\n', edit_lines


def _base_expr(path: List[str]) -> str:
    return '_base_' + ''.join(f'[{p}]' if p.isdigit() else f'.{p}' for p in path)


def _render_node(node: Dict[str, Any], path: List[str], base: Config, indent: str) -> str:
    inner = indent + '    '
    if node and all(part.isdigit() for part in node):  # items of a list of the base
        length = len(_get(base, '.'.join(path)))
        out = ['[']
        for i in range(length):
            item = node.get(str(i))
            if item is None:
                out.append(f'{inner}{_base_expr(path + [str(i)])},')
            else:
                out.append(f'{inner}dict(\n{inner}    {_base_expr(path + [str(i)])},')
                out += _render_items(item, path + [str(i)], base, inner + '    ')
                out.append(f'{inner}),')
        out.append(f'{indent}]')
        return '\n'.join(out)
    return '\n'.join(['dict('] + _render_items(node, path, base, inner) + [f'{indent})'])


def _render_items(node: Dict[str, Any], path: List[str], base: Config, indent: str) -> List[str]:
    out = []
    for key, child in node.items():
        if isinstance(child, _Leaf):
            source = child.source.replace('\n', '\n' + indent)
            out.append(f'{indent}{key}={source},' +
                       (f'  # {child.comment}' if child.comment else ''))
        else:
            out.append(f'{indent}{key}={_render_node(child, path + [key], base, indent)},')
    return out


# ---------------------------------------------------------------- the report
def report_lines(t: Translation, out: str) -> List[str]:
    """What the tool prints: per constant what it maps to and where its
    meaning differs, warnings, missing / unreadable / misspelled constants,
    and the dataset lines still to edit."""
    lines = [f'Seed script {t.script} -> {out} (base: {t.base})',
             'Carried over (constant -> config key):']
    for row in t.rows:
        head = f'  {row.name} = {_show(row.value)} (line {row.line})'
        if row.name != row.constant:
            head += f' [{row.constant}]'
        if row.mapped.writes:
            targets = ', '.join(f'{k} = {_show(v)}' if not isinstance(v, list) else k
                                for k, v in row.mapped.writes.items())
        elif row.constant in ('USE_FP16', 'USE_BF16'):
            targets = 'nothing (fp32 unless the other precision flag is set: the default)'
        else:
            targets = 'nothing'
        lines.append(f'{head} -> {targets}')
        lines += [f'      note: {note}' for note in row.mapped.notes]
        lines += [f'      WARNING: {warning}' for warning in row.mapped.warnings]
    if t.missing:
        lines.append('Not in the script (the config default is kept):')
        lines += [f'  {constant} -> ' + ', '.join(
            f'{k} = {"(unset)" if v is _MISSING else _show(v)}' for k, v in keys.items())
            for constant, keys in t.missing]
    if t.unreadable:
        lines.append('Not evaluated without running the script (the config default is kept; '
                     'write a literal to carry it over):')
        lines += [f'  {constant} (line {line})' for constant, line in t.unreadable]
    for name, line, known in t.suggestions:
        lines.append(f'Unknown constant {name} (line {line}): did you mean {known}? '
                     '(not carried over)')
    if t.ignored:
        lines.append('Not carried over (no config key): ' + ', '.join(t.ignored))
    from_script = [f'{var} <- {constant}' for var, _, constant, _ in t.dataset if constant]
    if from_script:
        lines.append('Dataset block: ' + ', '.join(from_script))
    if t.edit_lines:
        lines.append(f'Edit lines {", ".join(str(n) for n, _ in t.edit_lines)} of {out} ('
                     + ', '.join(var for _, var in t.edit_lines)
                     + '): not in the script, the base config\'s placeholders are kept')
    return lines
