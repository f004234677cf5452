"""What acquire does with an href's token: it is added just before each read (:func:`href_signer`)
and removed wherever an href is shown (:func:`public_href`), so a token never expires mid-run and
never reaches the catalog, a report, an error or the logs.
"""

from __future__ import annotations

from collections.abc import Callable

from landuse_kedro.storage import public_url

public_href = public_url  # an href without its token, as it may be logged, raised or reported


def href_signer(sign: str | None) -> Callable[[str], str]:
    """``planetary_computer``: SAS-signed URLs (the package is the optional ``acquire-pc`` extra);
    None: hrefs as they are. Called just before each read, so a token is never older than that read."""
    if not sign:
        return lambda href: href
    if sign != "planetary_computer":
        raise ValueError(f"acquire.sign must be null or 'planetary_computer', got {sign!r}.")
    try:
        import planetary_computer
    except ImportError as error:
        raise ImportError(
            "acquire.sign is 'planetary_computer' but the package is not installed: "
            "pip install 'landuse_kedro[acquire-pc]' (or set acquire.sign: null)."
        ) from error
    return planetary_computer.sign
