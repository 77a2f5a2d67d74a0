"""Dataclass <-> plain-dict conversion with strict validation.

Every config section is a dataclass; field metadata carries the allowed range or choices. `from_dict` rejects
unknown keys, wrong types and out-of-range values with the full path of the offending key, the value and what is
allowed; `to_dict` gives back plain data that `from_dict` turns into an equal object (the round trip is tested).
"""
import dataclasses
import inspect
import math
import typing
from typing import Any, Dict, List, Optional, Type, TypeVar

from .errors import RecipeError

T = TypeVar('T')

_NONE = type(None)


def spec(default: Any = dataclasses.MISSING, *, choices: Optional[tuple] = None, lo: Optional[float] = None,
         hi: Optional[float] = None, lo_open: bool = False, hi_open: bool = False, help: str = '',
         factory: Any = None) -> Any:
    """A dataclass field with validation metadata.

    Args:
        default: the default value (leave out for a required field).
        choices: allowed values.
        lo, hi: inclusive bounds, or exclusive with lo_open / hi_open.
        help: one line shown in docs.
        factory: default factory for mutable defaults (lists, nested sections).
    """
    meta = {'choices': choices, 'lo': lo, 'hi': hi, 'lo_open': lo_open, 'hi_open': hi_open, 'help': help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return ' or '.join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return f'a list of {_type_name(typing.get_args(tp)[0])}'
    if origin in (dict, Dict):
        return 'a mapping'
    if dataclasses.is_dataclass(tp):
        return f'a mapping with keys {", ".join(f.name for f in dataclasses.fields(tp))}'
    return {int: 'an integer', float: 'a number', str: 'a string', bool: 'true or false', _NONE: 'null',
            Any: 'any value'}.get(tp, getattr(tp, '__name__', str(tp)))


def _fail(where: str, path: str, value: Any, allowed: str) -> RecipeError:
    return RecipeError(f'{where}: {path}: {value!r} is not allowed; expected {allowed}')


def _check_range(where: str, path: str, value: Any, meta: dict, shown: Any) -> None:
    choices = meta.get('choices')
    if choices is not None and value not in choices:
        raise _fail(where, path, shown, 'one of ' + ', '.join(repr(c) for c in choices))
    lo, hi = meta.get('lo'), meta.get('hi')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(where, path, shown, 'a finite number')
        bad_lo = lo is not None and (value <= lo if meta.get('lo_open') else value < lo)
        bad_hi = hi is not None and (value >= hi if meta.get('hi_open') else value > hi)
        if bad_lo or bad_hi:
            lo_s = '' if lo is None else f'{">" if meta.get("lo_open") else ">="} {lo}'
            hi_s = '' if hi is None else f'{"<" if meta.get("hi_open") else "<="} {hi}'
            raise _fail(where, path, shown, 'a value ' + ' and '.join(s for s in (lo_s, hi_s) if s))


def _convert(tp: Any, value: Any, where: str, path: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and _NONE in args:
            return None
        errors = []
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return _convert(arg, value, where, path, meta)
            except RecipeError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise _fail(where, path, value, _type_name(tp))
    if tp is Any:
        return value
    shown = value
    if origin in (list, List):
        if not isinstance(value, list):
            raise _fail(where, path, value, _type_name(tp))
        (item,) = typing.get_args(tp)
        return [_convert(item, v, where, f'{path}[{i}]', meta) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise _fail(where, path, value, _type_name(tp))
        _, vt = typing.get_args(tp)
        return {str(k): _convert(vt, v, where, f'{path}.{k}', meta) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(where, path, value, 'true or false')
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, path, value, 'an integer')
    elif tp is float:
        # YAML 1.1 reads 5e-4 (no dot) as a string; accept what float() accepts so recipes read naturally.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _fail(where, path, value, 'a number') from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, path, value, 'a number')
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise _fail(where, path, value, 'a string')
    _check_range(where, path, value, meta, shown)
    return value


def from_dict(cls: Type[T], data: Any, where: str = 'config', path: str = '') -> T:
    """Builds dataclass `cls` from plain data, validating every key.

    Args:
        cls: the dataclass.
        data: a mapping (None means all defaults).
        where: the file or source named in errors.
        path: the dotted key path of `data` inside its file.
    """
    if data is None:
        data = {}
    name = path or 'top level'
    if not isinstance(data, dict):
        raise RecipeError(f'{where}: {name}: {data!r} is not allowed; expected {_type_name(cls)}')
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise RecipeError(f'{where}: {name}: unknown key {unknown[0]!r}; allowed keys: {", ".join(fields)}')
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, f in fields.items():
        sub = f'{path}.{key}' if path else key
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f'{where}: {sub}: missing; expected {_type_name(hints[key])}')
            continue
        kwargs[key] = _convert(hints[key], data[key], where, sub, dict(f.metadata))
    obj = cls(**kwargs)
    check = getattr(obj, 'check', None)
    if check is not None:
        check(where, path)
    return obj


def check_value(cls: Type[Any], name: str, value: Any, where: str, path: str) -> Any:
    """`value` for field `name` of dataclass `cls`, validated as `from_dict` validates it (type, range, choices).

    Args:
        where: the file or object named in errors.
        path: the dotted key path of the field.
    """
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _convert(typing.get_type_hints(cls)[name], value, where, path, dict(f.metadata))


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a dataclass tree, in field order."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a config section, as schema() lists it."""
    path: str  # dotted; the items of a list of sections are name[]
    type: str
    default: Any  # dataclasses.MISSING for a required key; a section key's default is an object
    help: str
    choices: Optional[tuple] = None
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    section: bool = False  # a section (or a list of them) that schema() lists on its own


@dataclasses.dataclass(frozen=True)
class Section:
    """A dataclass of a config tree: its keys, and what it holds when it is left out entirely."""
    path: str  # '' for the top level
    help: str  # the help of the key holding it
    doc: str  # the dataclass's own docstring, if it has one
    keys: List[Key]
    left_out: Dict[str, Any]  # keys whose value differs from their default when the whole section is left out


def _section_class(tp: Any) -> tuple:
    """(dataclass, path suffix) of a key that holds a section, a section or null, or a list of sections."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not _NONE]
    if dataclasses.is_dataclass(tp):
        return tp, ''
    if origin is typing.Union and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0], ''
    if origin in (list, List) and dataclasses.is_dataclass(args[0]):
        return args[0], '[]'
    return None, ''


def short_type(tp: Any) -> str:
    """A key's type in a word or three: int, float or null, list of str, section, ..."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        kept = [a for a in args if a is not _NONE]
        return ' or '.join([short_type(a) for a in kept] + (['null'] if len(kept) < len(args) else []))
    if origin in (list, List):
        return 'list of sections' if dataclasses.is_dataclass(args[0]) else f'list of {short_type(args[0])}'
    if origin in (dict, Dict):
        return f'map of {short_type(args[0])} to {short_type(args[1])}'
    if dataclasses.is_dataclass(tp):
        return 'section'
    return {int: 'int', float: 'float', str: 'str', bool: 'bool', Any: 'any'}.get(tp, getattr(tp, '__name__', str(tp)))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _own_doc(cls: Type[Any]) -> str:
    doc = inspect.cleandoc(cls.__doc__ or '')
    return '' if doc.startswith(cls.__name__ + '(') else doc  # dataclasses make up a signature as the docstring


def schema(cls: Type[Any], path: str = '', help: str = '', left_out: Any = None) -> List[Section]:
    """Every section of a dataclass tree, the top one first and each followed by the sections inside it.

    Args:
        cls: the top dataclass.
        path: the dotted path of `cls` inside its file.
        help: the help of the key holding `cls`.
        left_out: the object the key holding `cls` defaults to (None: no default, or null).
    """
    hints = typing.get_type_hints(cls)
    keys, inner = [], []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        sub = f'{path}.{f.name}' if path else f.name
        meta, default = f.metadata, _default(f)
        sub_cls, suffix = _section_class(hints[f.name])
        keys.append(Key(sub, short_type(hints[f.name]), default, meta.get('help', ''), meta.get('choices'),
                        meta.get('lo'), meta.get('hi'), bool(meta.get('lo_open')), bool(meta.get('hi_open')),
                        sub_cls is not None))
        if sub_cls is not None:
            inner.extend(schema(sub_cls, sub + suffix, meta.get('help', ''), default))
    differs = {}
    if dataclasses.is_dataclass(left_out):  # e.g. finetune: TrainConfig with its own epochs and lr
        for k in keys:
            name = k.path.rsplit('.', 1)[-1]
            if getattr(left_out, name) != k.default:
                differs[name] = getattr(left_out, name)
    return [Section(path, help, _own_doc(cls), keys, differs)] + inner
