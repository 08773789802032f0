"""Typed reads of a decoded map's fields: the one checker behind every from_wire, so parsers say alike what is wrong."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, TypeVar

Word = TypeVar("Word", bound=StrEnum)
MAX_DEPTH = 8
PLAIN_LEAVES = (str, bytes, int, float, bool, type(None))


def require_map(obj: Any, what: str) -> dict[str, Any]:
    """A decoded value that must be a map."""
    if not isinstance(obj, dict):
        raise ValueError(f"{what} is a {type(obj).__name__}, not a map")
    return obj


def typed(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """A field that must be there with this type (a bool is never taken for a number)."""
    if key not in obj:
        raise ValueError(f"{what} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{what} {key!r} has type {type(value).__name__}")
    return value


def optional(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """A field that may be missing or nil, else must have this type."""
    return None if obj.get(key) is None else typed(obj, key, kind, what)


def listed(obj: dict[str, Any], key: str, what: str) -> list[Any]:
    """A list field that readers from before it existed may lack: missing reads as empty, nil is refused."""
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{what} {key!r} must be a list")
    return value


def member(obj: dict[str, Any], key: str, kind: type[Word], what: str) -> Word:
    """A field that must be one of an enum's words."""
    value = typed(obj, key, str, what)
    if value not in kind.__members__.values():
        raise ValueError(f"{what} {key} {value!r} is unknown")
    return kind(value)


def counts(obj: Any, what: str) -> dict[str, int]:
    """A map of names to counts."""
    found = require_map(obj, what)
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in found.items()):
        raise ValueError(f"{what} must map names to counts")
    return dict(found)


def finite(value: float, what: str) -> float:
    """A number JSON can carry: NaN and infinities are refused."""
    if not math.isfinite(value):
        raise ValueError(f"{what} {value} is not finite")
    return value


def number(obj: dict[str, Any], key: str, what: str) -> float:
    """A field that must be a finite number (an int is taken, and read as a float)."""
    return finite(float(typed(obj, key, (int, float), what)), f"{what} {key!r}")


def plain(obj: Any, what: str, depth: int = 0) -> Any:
    """Free-form data every view can show and JSON can carry: maps with string keys, lists, strings, bytes,
    finite numbers, booleans, nil, nested at most MAX_DEPTH deep (no msgpack Timestamp or ext type)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{what} is nested deeper than {MAX_DEPTH}")
    if isinstance(obj, float):
        finite(obj, what)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f"{what} has a key of type {type(key).__name__}")
            plain(value, what, depth + 1)
    elif isinstance(obj, list):
        for value in obj:
            plain(value, what, depth + 1)
    elif not isinstance(obj, PLAIN_LEAVES):
        raise ValueError(f"{what} holds a {type(obj).__name__}")
    return obj


def plain_map(obj: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """A field that must be a map of plain data (see plain)."""
    return plain(typed(obj, key, dict, what), f"{what} {key!r}")
