"""Checks of scalar arguments that raise :class:`~infdiff.data.errors.DataError` naming the argument."""

from __future__ import annotations

from typing import Any, Tuple

from infdiff.data.errors import DataError

MODES = {1: "L", 3: "RGB"}  # Pillow mode of each supported channel count


def require_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer ``>= minimum``; else a DataError naming ``name``."""
    try:
        valid = int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_channels(channels: Any, name: str = "channels") -> int:
    """``channels`` if it is 1 (greyscale) or 3 (RGB); else a DataError naming ``name``."""
    if channels not in MODES or isinstance(channels, bool):
        raise DataError(f"{name} must be 1 (greyscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def check_range(value: Any, name: str, low: float, high: float) -> Tuple[float, float]:
    """``value`` as ``(a, b)`` if it is two numbers with ``low < a <= b <= high``; else a DataError naming ``name``."""
    try:
        a, b = (float(v) for v in value)
        valid = low < a <= b <= high and not any(isinstance(v, bool) for v in value)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise DataError(f"{name} must be two numbers (a, b) with {low} < a <= b <= {high}, got {value!r}")
    return a, b
