"""Typed, frozen dataclass configurations built from YAML values (coercion, clear errors).

A method's hyper-parameters (`cmrbench.methods.base.MethodConfig`) and an optimizer's
settings (`cmrbench.optim.OptimConfig`) are frozen dataclasses whose field
annotations say what each value is. A grid file gives plain YAML values (``10`` for a
float, ``[0.9, 0.95]`` for a pair, ``1e-4`` as a *string*, since YAML 1.1 needs a dot for a
float); `build_config` turns them into the field types and raises a `ConfigError` that
names the owner, the key and what was expected, before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar, Union

from cmrbench.errors import CmrbenchError

T = TypeVar("T")


class ConfigError(CmrbenchError, ValueError):
    """A configuration key or value that its dataclass does not accept; the message says why."""


def field_names(cls: type) -> list[str]:
    """The field names of the dataclass ``cls``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def build_config(cls: type[T], values: Mapping[str, Any], owner: str,
                 noun: str = "hyper-parameter") -> T:
    """``cls(**values)`` with every value coerced to its field's annotated type.

    Args:
        cls: a dataclass whose ``__post_init__`` checks ranges (raising `ValueError`).
        values: overrides of the field defaults (YAML values).
        owner: what the configuration belongs to, e.g. ``"method 'dino'"``; every error
            message starts with it.
        noun: what a key is called in errors (``"hyper-parameter"``, ``"optimizer setting"``).

    Raises:
        ConfigError: an unknown key (naming the valid ones), a value of the wrong type
            (naming the expected type), or a value the dataclass's checks reject.
    """
    valid = field_names(cls)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"{owner}: unknown {noun}{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    coerced = {key: coerce(value, hints[key], f"{owner}: {noun} {key!r}")
               for key, value in values.items()}
    try:
        return cls(**coerced)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as ``annotation`` (bool, int, float, str, tuples, ``X | None``).

    Ints are accepted for floats and integral floats for ints; numeric strings for floats
    (YAML reads ``1e-4`` as a string); lists for tuples. Other annotations pass ``value``
    through unchanged.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)] or [Any]
        return coerce(value, inner, where)
    if origin is tuple:
        return _coerce_tuple(value, args, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is {value!r}; expected true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where} is {value!r}; expected a whole number")
        return int(value)
    if annotation is float:
        return _coerce_float(value, where)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} is {value!r}; expected a string")
        return value
    return value


def _coerce_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} is {value!r}; expected a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where} is {value!r}; expected a number")


def _coerce_tuple(value: Any, args: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} is {value!r}; expected a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], where) for v in value)
    if len(value) != len(args):
        raise ConfigError(f"{where} is {value!r}; expected a list of {len(args)} values")
    return tuple(coerce(v, a, where) for v, a in zip(value, args))
