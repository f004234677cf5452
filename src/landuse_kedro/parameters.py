"""Runtime parameters as users write them: one rule for every list the project reads, the check
of a `--params` value against the type of the parameter it overrides, and the refusal of renamed
parameters (used by ParameterHooks)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RENAMED = {
    "data_preparation.min_purity": "data_preparation.min_label_share",
    "development_inference.older_year": "development_inference.older_nlcd_year",
    "development_inference.newer_year": "development_inference.newer_naip_year",
}
"""Parameters renamed so that one quantity has one name (issue 30): the old name is refused, not
ignored, since a run would otherwise quietly use the new name's default."""


def check_renamed(keys: Iterable[str], where: str) -> None:
    """Refuse parameters by their old names, saying the new one.

    Raises:
        ValueError: a key of ``keys`` (dotted) is an old name.
    """
    if old := [key for key in keys if key in RENAMED]:
        renames = ", ".join(f"{key} is now {RENAMED[key]}" for key in old)
        raise ValueError(
            f"Renamed parameter(s) in {where}: {renames}. Use the new name (README, Parameters)."
        )


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


def conform(key: str, given: Any, configured: Any) -> Any:
    """``given`` (a ``--params`` value as Kedro parsed it) in the form of the configured value.

    Raises:
        ValueError: ``given`` is not of the configured value's type (null is always accepted, and a
            parameter configured as null takes any value).
    """
    if given is None or configured is None:
        return given
    if isinstance(configured, dict):
        if not isinstance(given, dict):
            first = next(iter(configured), "<name>")
            raise _mismatch(key, given, configured, f"{key}.{first}={_example(configured.get(first))}")
        return {name: conform(f"{key}.{name}", value, configured.get(name)) for name, value in given.items()}
    if isinstance(configured, list):
        if isinstance(given, dict):
            raise _mismatch(key, given, configured, f"{key}={_example(configured)}")
        kinds = {_kind(item) for item in configured}
        item_kind = kinds.pop() if len(kinds) == 1 else None
        items = [_item(item, item_kind) for item in as_list(given)]
        if any(
            _kind(item) in ("list", "mapping") or (item_kind and _kind(item) != item_kind) for item in items
        ):
            raise _mismatch(key, given, configured, f"{key}={_example(configured)}")
        return items
    if _kind(given) != _kind(configured):
        raise _mismatch(key, given, configured, f"{key}={_example(configured)}")
    return given


def _item(item: Any, kind: str | None) -> Any:
    """One item of a list parameter: "11" is a number where the list holds numbers (or nothing yet,
    like ``acquire.years``), 2016 a name where it holds names."""
    if isinstance(item, str) and kind in ("number", None):
        for number in (int, float):
            try:
                return number(item)
            except ValueError:
                pass
    if kind == "string" and _kind(item) == "number":
        return str(item)
    return item


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return "string"


def _example(configured: Any) -> str:
    if isinstance(configured, bool):
        return str(configured).lower()
    if isinstance(configured, list):
        return " ".join(map(str, configured[:2])) or "<value> <value>"
    if isinstance(configured, dict):
        return "..."
    return "<value>" if configured is None else str(configured)


def _mismatch(key: str, given: Any, configured: Any, example: str) -> ValueError:
    kind = _kind(configured)
    if kind == "list":
        items = {_kind(item) for item in configured}
        of = {"number": " of numbers", "string": " of names"}.get(items.pop(), "") if len(items) == 1 else ""
        what = (
            f"a list{of} in the configuration files (on the command line: a YAML list, one value, or "
            "values separated by spaces, since --params splits at commas)"
        )
    elif kind == "mapping":
        what = "a group of parameters in the configuration files: set one of its keys"
    else:
        what = f"a {kind} in the configuration files"
    return ValueError(
        f"Runtime parameter {key}={given!r} is a {_kind(given)}, but {key} is {what}. "
        f'Give e.g. --params "{example}".'
    )
