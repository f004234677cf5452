"""The land-cover vocabulary of the project, in one place: the model's classes in output order, the
NLCD code -> class table, and the walkthrough's 3-class view (Developed, Cultivated, the rest).

Everything here comes from ``params:land_cover`` (``conf/base/parameters.yml``). Nodes receive that
dict from Kedro and build :meth:`LandCover.from_params` inside; scoring, evaluation, rasters and
maps ask it, never the dict. A :class:`LandCover` is frozen, small and picklable (tuples of
strings and ints), so it travels to Spark executors inside the scorer's settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NO_LABEL = 255
"""Class value of a pixel outside the label raster or on its nodata."""
DROPPED = 254
"""Class value of a legend code the class table does not map (water, ice: ``land_cover.water_codes``)."""
UNKNOWN = 253
"""Class value of a code outside the legend (another product's, a fill): never a class, never dropped
silently; a tile with such pixels has no label."""


def class_lookup(nlcd_to_class: Mapping[str, Sequence[int]], classes: Sequence[str]) -> np.ndarray:
    """uint8 table code -> class index (``classes`` order); unmapped codes -> ``DROPPED``.

    Refuses a table that names a class not in ``classes``, a class without codes, a code outside
    0-253 and a code mapped to two classes.
    """
    unknown = sorted(set(nlcd_to_class) - set(classes))
    if unknown:
        raise ValueError(f"land_cover.nlcd_to_class names classes not in land_cover.classes: {unknown}")
    lut = np.full(256, DROPPED, dtype=np.uint8)
    for index, name in enumerate(classes):
        codes = list(nlcd_to_class.get(name) or [])
        if not codes:
            raise ValueError(f"Class '{name}' has no NLCD codes in land_cover.nlcd_to_class.")
        for code in codes:
            if not 0 <= int(code) < DROPPED:
                raise ValueError(f"NLCD code {code} of class '{name}' is outside 0-{DROPPED - 1}.")
            if lut[code] != DROPPED:
                raise ValueError(f"NLCD code {code} is mapped to both '{classes[lut[code]]}' and '{name}'.")
            lut[code] = index
    return lut


@dataclass(frozen=True)
class LandCover:
    """``params:land_cover`` checked and frozen.

    Attributes:
        classes: the model's classes; index i of a probability vector is ``classes[i]``.
        nlcd_table: the checked NLCD code -> class index table (:func:`class_lookup`) as 256
            bytes (immutable, so the object stays frozen and picklable), or None when the
            parameters have no ``nlcd_to_class`` (scoring needs no NLCD table).
        three_class_of: the 3-class group of each of ``classes``, in the same order.
        three_class_names: the 3-class groups in a stable order: the named groups as
            ``land_cover.three_class`` lists them, then ``three_class_other`` (the catch-all).
        three_class_other: the group of every class ``land_cover.three_class`` does not name.
        water_codes: NLCD codes of the legend with no class (open water, ice): dropped pixels.
        nodata_codes: NLCD codes that mean "no data" (0, Annual NLCD's 250): unlabelled pixels.
        max_unknown_fraction: the share of a scene's NLCD pixels that may hold codes outside the
            legend (``nlcd_to_class`` + ``water_codes`` + ``nodata_codes``) before planning stops.

    Example (``conf/base/parameters.yml``)::

        land_cover:
          classes: [Developed, Cultivated, Forest, Shrub, Barren, Herbaceous]
          nlcd_to_class: {Developed: [21, 22, 23, 24], Cultivated: [81, 82], ...}
          three_class: {Developed: Developed, Cultivated: Cultivated}
          three_class_other: Undeveloped
    """

    classes: tuple[str, ...]
    nlcd_table: bytes | None
    three_class_of: tuple[str, ...]
    three_class_names: tuple[str, ...]
    three_class_other: str
    water_codes: tuple[int, ...] = (11, 12)
    nodata_codes: tuple[int, ...] = (0, 250)
    max_unknown_fraction: float = 0.0

    @classmethod
    def from_params(cls, land_cover: Mapping[str, Any]) -> LandCover:
        """Check and freeze ``params:land_cover``.

        Args:
            land_cover: the ``land_cover`` parameters: ``classes``, ``three_class`` (class ->
                group), ``three_class_other`` and, where NLCD labels are read, ``nlcd_to_class``.

        Returns:
            The vocabulary. Raises ``ValueError`` naming the key at fault for repeated or empty
            classes, a ``three_class`` entry whose class is not in ``classes``, and (through
            :func:`class_lookup`) a bad NLCD table.
        """
        classes = tuple(str(name) for name in land_cover["classes"])
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"land_cover.classes must name distinct classes, got {list(classes)}.")
        groups = {str(name): str(group) for name, group in dict(land_cover["three_class"] or {}).items()}
        unknown = [name for name in groups if name not in classes]
        if unknown:
            raise ValueError(
                f"land_cover.three_class groups class(es) {unknown} that are not in "
                f"land_cover.classes {list(classes)}."
            )
        other = str(land_cover["three_class_other"])
        table = land_cover.get("nlcd_to_class")
        # checked now, not in the first node that reads NLCD
        nlcd_table = None if table is None else class_lookup(table, classes).tobytes()
        water = _codes(land_cover, "water_codes", cls.water_codes)
        nodata = _codes(land_cover, "nodata_codes", cls.nodata_codes)
        if table is not None:
            mapped = {int(code) for codes in table.values() for code in codes or []}
            for key, codes in {"water_codes": water, "nodata_codes": nodata}.items():
                if mapped & set(codes):
                    raise ValueError(f"land_cover.{key} {sorted(mapped & set(codes))} are mapped to classes.")
        return cls(
            classes=classes,
            nlcd_table=nlcd_table,
            three_class_of=tuple(groups.get(name, other) for name in classes),
            three_class_names=tuple(dict.fromkeys([*groups.values(), other])),
            three_class_other=other,
            water_codes=water,
            nodata_codes=nodata,
            max_unknown_fraction=float(land_cover.get("max_unknown_fraction", 0.0)),
        )

    def nlcd_lookup(self) -> np.ndarray:
        """uint8 table NLCD code -> index in :attr:`classes`; the legend's other codes -> ``DROPPED``
        (water) or ``NO_LABEL`` (no data); codes outside the legend -> ``UNKNOWN``."""
        if self.nlcd_table is None:
            raise ValueError("land_cover.nlcd_to_class is missing: NLCD codes cannot be mapped to classes.")
        lut = np.frombuffer(self.nlcd_table, dtype=np.uint8).copy()
        lut[lut == DROPPED] = UNKNOWN
        lut[list(self.water_codes)] = DROPPED
        lut[list(self.nodata_codes)] = NO_LABEL
        return lut

    def to_three_class(self, label: str | None) -> str | None:
        """The 3-class group of a class name; None (no prediction) stays None."""
        if label is None:
            return None
        return self.three_class_of[self.classes.index(label)]

    def three_class_indices(self, labels: np.ndarray) -> np.ndarray:
        """Class indices (any shape) -> indices in :attr:`three_class_names`."""
        lookup = np.array([self.three_class_names.index(group) for group in self.three_class_of])
        return lookup[np.asarray(labels, dtype=int)]

    def three_class_lookup(self) -> np.ndarray:
        """uint8 table class index -> index in :attr:`three_class_names`, for class rasters; the
        values past the classes (``DROPPED``, ``NO_LABEL``) map to themselves."""
        lut = np.arange(256, dtype=np.uint8)
        lut[: len(self.classes)] = self.three_class_indices(np.arange(len(self.classes)))
        return lut


def _codes(land_cover: Mapping[str, Any], key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """``land_cover[key]`` as NLCD codes (0-255); ``default`` (NLCD's own) when left out."""
    if land_cover.get(key) is None:
        return default
    codes = tuple(int(code) for code in land_cover[key])
    if any(not 0 <= code <= 255 for code in codes):
        raise ValueError(f"land_cover.{key} must be NLCD codes 0-255, got {list(codes)}.")
    return codes


def unknown_codes(counts: np.ndarray, lut: np.ndarray, nodata: float | None = None) -> dict[int, int]:
    """{code: pixels} of the codes outside the legend in a 256-bin code histogram; a raster's declared
    ``nodata`` is no data whatever its code."""
    unknown = (lut == UNKNOWN) & (counts > 0)
    if nodata is not None and 0 <= nodata <= 255:
        unknown[int(nodata)] = False
    return {int(code): int(counts[code]) for code in np.flatnonzero(unknown)}
