"""`cmrbench.typed`: YAML values coerced to declared types, with errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cmrbench.typed import ConfigError, build_config, coerce, coerce_values, field_types


@dataclass(frozen=True)
class Example:
    rate: float = 0.1
    steps: int = 10
    pair: tuple[float, float] = (0.9, 0.999)
    split: str | dict[str, list[Any]] | None = None
    folder: str | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate {self.rate} must be > 0")


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        ("1e-4", float, 0.0001),  # YAML 1.1 reads 1e-4 as a string
        (3, float, 3.0),
        (8.0, int, 8),
        ([0.9, 0.95], tuple[float, float], (0.9, 0.95)),
        ([1, 2.0], list[float], [1.0, 2.0]),
        ({"a": [1]}, dict[str, list[int]], {"a": [1]}),
        ("paper", str | dict[str, Any] | None, "paper"),
        ({"train": ["x"]}, str | dict[str, Any] | None, {"train": ["x"]}),
        (None, str | dict[str, Any] | None, None),
        (Path("/data"), str, "/data"),
        ([1, "a"], Any, [1, "a"]),
    ],
)
def test_values_are_coerced_to_their_declared_types(value, annotation, expected) -> None:
    coerced = coerce(value, annotation, "here")
    assert coerced == expected and type(coerced) is type(expected)


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        ("many", float, "here is 'many'; expected a number"),
        (True, float, "here is True; expected a number"),
        (1.5, int, "here is 1.5; expected a whole number"),
        ("8", int, "here is '8'; expected a whole number"),
        ("yes", bool, "here is 'yes'; expected true or false"),
        ([0.9], tuple[float, float], "here is [0.9]; expected a list of 2 values"),
        (3, str | dict[str, Any] | None, "here is 3; expected a string or a mapping"),
        ({"a": "x"}, dict[str, int], "here['a'] is 'x'; expected a whole number"),
    ],
)
def test_a_wrong_type_names_where_the_value_and_what_was_expected(
    value, annotation, message
) -> None:
    with pytest.raises(ConfigError) as error:
        coerce(value, annotation, "here")
    assert str(error.value) == message


def test_a_partial_mapping_keeps_only_its_keys_and_an_unknown_key_names_the_valid_ones() -> None:
    types = field_types(Example)
    assert list(types) == ["rate", "steps", "pair", "split", "folder"]
    assert coerce_values({"rate": "2e-1"}, types, "owner") == {"rate": 0.2}
    with pytest.raises(ConfigError) as error:
        coerce_values({"rat": 1, "step": 2}, types, "grid.yaml: 'x'", noun="key")
    assert str(error.value) == (
        "grid.yaml: 'x': unknown keys 'rat', 'step'; valid: rate, steps, pair, split, folder"
    )
    with pytest.raises(ConfigError, match=r"^owner: unknown key 'a'; valid: \(none\)$"):
        coerce_values({"a": 1}, {}, "owner")


def test_build_config_types_every_value_and_reports_the_dataclass_checks() -> None:
    config = build_config(
        Example,
        {"rate": "5e-2", "steps": 20.0, "pair": [0.9, 0.95], "folder": Path("/x")},
        "method 'm'",
    )
    assert config == Example(rate=0.05, steps=20, pair=(0.9, 0.95), folder="/x")
    with pytest.raises(ConfigError, match=r"^method 'm': rate -1.0 must be > 0$"):
        build_config(Example, {"rate": -1}, "method 'm'")
