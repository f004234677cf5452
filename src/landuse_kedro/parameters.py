"""List parameters as users write them, one rule for every list the project reads."""

from __future__ import annotations

from typing import Any


def as_list(value: Any) -> list[Any]:
    """A YAML list, one value, or values separated by spaces, as a list.

    Kedro splits ``--params`` at commas, so on the command line several names are separated by spaces
    (``regions=essex norfolk``, or ``[essex norfolk]``, which YAML reads as one string in a list);
    one name arrives as a string (``regions=essex``) or a number (``water_codes=11``). ``None`` is
    the empty list.
    """
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [part for item in items for part in (item.split() if isinstance(item, str) else [item])]
