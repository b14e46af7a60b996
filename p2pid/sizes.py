"""Sizes for people: bytes in decimal units, as file managers show them."""

from __future__ import annotations

UNITS = ("B", "kB", "MB", "GB", "TB")


def human_size(size: float) -> str:
    """999 B, 1.2 kB, 34 MB, 120 GB."""
    unit = 0
    while size >= 1000 and unit < len(UNITS) - 1:
        size /= 1000
        unit += 1
    if unit == 0:
        return f"{int(size)} B"
    return f"{size:.1f} {UNITS[unit]}" if size < 100 else f"{size:.0f} {UNITS[unit]}"
