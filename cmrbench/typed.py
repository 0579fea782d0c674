"""Typed settings from YAML values: coercion to declared types, and errors that name the key.

Every setting a user writes (a grid section, a method's hyper-parameters, an optimizer's
settings, a dataset adapter's options) has a declared type: a field of a frozen dataclass
(`cmrbench.methods.base.MethodConfig`, `cmrbench.optim.OptimConfig`, a dataset adapter's
``options_class``) or an entry of a table of keys and types (the grid's sections). A grid
file gives plain YAML values (``10`` for a float, ``[0.9, 0.95]`` for a pair, ``1e-4`` as a
*string*, since YAML 1.1 needs a dot for a float); `coerce_values` turns them into the
declared types and `build_config` builds the dataclass, and both raise a `ConfigError` that
names the owner, the key and what was expected, before anything runs.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from cmrbench.errors import CmrbenchError

T = TypeVar("T")


class ConfigError(CmrbenchError, ValueError):
    """A configuration key or value that its declaration does not accept; the message says why."""


def field_names(cls: type) -> list[str]:
    """The field names of the dataclass ``cls``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def field_types(cls: type) -> dict[str, Any]:
    """Field name → annotated type of the dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {name: hints[name] for name in field_names(cls)}


def coerce_values(
    values: Mapping[str, Any], types_: Mapping[str, Any], owner: str, noun: str = "key"
) -> dict[str, Any]:
    """``values`` with each value coerced to ``types_[key]`` (a partial configuration: keys
    left out stay out).

    Args:
        values: YAML values by key.
        types_: every valid key → its type (`coerce` says which types are understood).
        owner: what the values belong to (``"grid.yaml: 'finetune'"``); every error message
            starts with it.
        noun: what a key is called in errors (``"hyper-parameter"``, ``"option"``).

    Raises:
        ConfigError: an unknown key (naming the valid ones) or a value of the wrong type
            (naming the key and the expected type).
    """
    unknown = sorted(set(values) - set(types_), key=str)
    if unknown:
        raise ConfigError(
            f"{owner}: unknown {noun}{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; valid: "
            f"{', '.join(types_) or '(none)'}"
        )
    return {
        key: coerce(value, types_[key], f"{owner}: {noun} {key!r}") for key, value in values.items()
    }


def build_config(
    cls: type[T], values: Mapping[str, Any], owner: str, noun: str = "hyper-parameter"
) -> T:
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
    coerced = coerce_values(values, field_types(cls), owner, noun)
    try:
        return cls(**coerced)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as ``annotation``: bool, int, float, str, tuples, lists, dicts, unions
    (``X | None``, ``str | dict[str, Any]``) and `Any`.

    Ints are accepted for floats and integral floats for ints; numeric strings for floats
    (YAML reads ``1e-4`` as a string); paths for strings; lists for tuples. A union takes
    the first of its types that accepts the value.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, args, where)
    if origin is tuple:
        return _coerce_tuple(value, args, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} is {value!r}; expected a list")
        return [coerce(v, args[0] if args else Any, where) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} is {value!r}; expected a mapping")
        key_type, value_type = args or (Any, Any)
        return {
            coerce(k, key_type, where): coerce(v, value_type, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is {value!r}; expected true or false")
        return value
    if annotation is int:
        return _coerce_int(value, where)
    if annotation is float:
        return _coerce_float(value, where)
    if annotation is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where} is {value!r}; expected a string")
        return value
    return value


_EXPECTED = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list",
    tuple: "a list",
    dict: "a mapping",
}


def _coerce_union(value: Any, args: tuple[Any, ...], where: str) -> Any:
    if value is None and type(None) in args:
        return None
    choices = [a for a in args if a is not type(None)]
    if len(choices) == 1:
        return coerce(value, choices[0], where)
    for choice in choices:
        try:
            return coerce(value, choice, where)
        except ConfigError:
            continue
    expected = " or ".join(_EXPECTED.get(typing.get_origin(c) or c, str(c)) for c in choices)
    raise ConfigError(f"{where} is {value!r}; expected {expected}")


def _coerce_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    ):
        raise ConfigError(f"{where} is {value!r}; expected a whole number")
    return int(value)


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
