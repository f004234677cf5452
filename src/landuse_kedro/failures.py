"""How a failure is told: an error with the causes under it, reasons grouped by cause, and the failure
budget that stops a run when too many items failed (scoring, labelling, tiling alike)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import pandas as pd


def error_chain(error: BaseException) -> str:
    """``Type: message`` of ``error`` and of each error under it, outermost first: rasterio's
    "Read failed. See previous exception" hides GDAL's cause (``ZIPDecode: Decoding error``) there."""
    parts: list[str] = []
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause)
        if not any(text in part for part in parts):  # GDAL repeats an inner message in the outer one
            parts.append(f"{type(cause).__name__}: {text}")
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(parts)


_LONE_NUMBER = re.compile(r"(?<![\w/.:-])\d+(?![\w/.-])")


def failure_counts(reasons: Iterable[str | None]) -> dict[str, int]:
    """Failure reasons grouped by cause, commonest first: numbers standing alone (GDAL's block
    offsets, scanlines) become ``#``, while paths and names keep theirs; each row keeps its own."""
    keys = pd.Series([_LONE_NUMBER.sub("#", reason) for reason in reasons if reason], dtype=object)
    return {str(key): int(count) for key, count in keys.value_counts().items()}


def check_failure_rate(
    total: int,
    errors: Iterable[str] | Mapping[str, int],
    max_failed_fraction: float,
    what: str,
    setting: str = "scoring.max_failed_fraction",
) -> None:
    """Fail when more than ``max_failed_fraction`` of ``total`` items failed: a wrong key, a wrong
    ``image_size`` or throttled storage fails every file, and that must not pass as a run with
    warnings. Called after the rows and metrics are saved, so they stay for the diagnosis.
    ``errors``: each failure's reason (grouped by what precedes its first colon), or reasons
    already grouped by cause with their counts."""
    if isinstance(errors, Mapping):
        reasons = pd.Series(dict(errors), dtype="int64").sort_values(ascending=False, kind="stable")
    else:
        reasons = pd.Series([error.split(":")[0] for error in errors], dtype=object).value_counts()
    failed = int(reasons.sum())
    if total and failed / total > max_failed_fraction:
        common = "; ".join(f"{count} x {reason}" for reason, count in reasons.head(3).items())
        raise RuntimeError(
            f"{failed} of {total} {what} failed ({failed / total:.0%}, above "
            f"{setting} = {max_failed_fraction}); commonest reasons: {common}. "
            "The rows and metrics are saved."
        )
