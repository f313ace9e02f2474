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
import operator
import os.path as osp
from typing import Any, Dict, NamedTuple


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
