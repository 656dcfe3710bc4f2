"""Small value types shared by the scenario schema and the fault catalog."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|h)$"


def parse_duration(value: Any) -> float:
    """'30s' -> 30.0, '5m' -> 300.0, '250ms' -> 0.25. Bare numbers are refused: units are required."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"must be a duration string with a unit like '30s', '5m' or '250ms', got {value!r}")
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration: use a number with a unit ms, s, m or h (e.g. '30s', '5m')")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# Seconds as float in Python, "30s"-style strings in YAML and JSON.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "5m", "250ms"]}),
]


def _check_range(lo: float, hi: float):
    def check(v: float) -> float:
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return v

    return check


def between(kind: type, lo: float, hi: float, description: str) -> Any:
    """An int/float type bounded to [lo, hi], with the bounds in the JSON Schema."""
    return Annotated[
        kind,
        AfterValidator(_check_range(lo, hi)),
        Field(description=description, json_schema_extra={"minimum": lo, "maximum": hi}),
    ]


def positive_duration(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


PositiveDuration = Annotated[Duration, AfterValidator(positive_duration)]
