"""Typed reads of a decoded map's fields: the one checker behind every from_wire, so parsers say alike what is wrong."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

Word = TypeVar("Word", bound=StrEnum)


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
