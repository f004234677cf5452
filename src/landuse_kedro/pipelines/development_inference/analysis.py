"""Pure table and grid logic of the development maps: map classes, plurality, smoothing, agreement,
change candidates and the summary table. No I/O, so every rule is tested on small grids.

Map classes are coded 1..K in the order of the ``map_classes`` parameter; 0 is nodata (a tile that
failed to score, or an older label that is masked or has no NLCD pixels). Codes, not names, go into
the rasters so a GIS shows them with the colour table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import correlate

NODATA = 0


def class_codes(map_classes: Sequence[str]) -> dict[str, int]:
    """Class name -> raster code, 1-based so 0 stays free for nodata."""
    return {name: code for code, name in enumerate(map_classes, start=1)}


def smooth_classes(grid: np.ndarray, n_classes: int, centre_weight: float) -> np.ndarray:
    """3x3 weighted plurality: each valid neighbour gives one vote to its class, the tile itself
    ``centre_weight`` votes. Why: a lone tile predicted differently from all its neighbours is more
    often a model error than a real one-tile patch; the heavier centre keeps real small patches, as
    a tile changes only when another class outvotes its own (its weight plus its like neighbours).

    Ties keep the centre's class; among other classes the lowest code wins. Nodata tiles stay
    nodata and cast no vote: a failure must not be painted over.
    """
    grid = np.asarray(grid)
    kernel = np.ones((3, 3), dtype=np.float64)
    kernel[1, 1] = centre_weight
    votes = np.stack(
        [
            correlate((grid == code).astype(np.float64), kernel, mode="constant", cval=0.0)
            for code in range(1, n_classes + 1)
        ]
    )
    best = votes.max(axis=0) - 1e-9
    lowest_best = np.argmax(votes >= best, axis=0) + 1
    own = np.clip(grid.astype(np.intp) - 1, 0, n_classes - 1)
    own_votes = np.take_along_axis(votes, own[None], axis=0)[0]
    smoothed = np.where(own_votes >= best, grid, lowest_best)
    return np.where(grid == NODATA, NODATA, smoothed).astype(grid.dtype)


def to_grid(tiles: pd.DataFrame, column: str, codes: Mapping[str, int]) -> np.ndarray:
    """Per-tile class names -> a (rows, cols) code grid; tiles without a class are nodata."""
    n_rows, n_cols = int(tiles["row"].max()) + 1, int(tiles["col"].max()) + 1
    grid = np.full((n_rows, n_cols), NODATA, dtype=np.uint8)
    values = tiles[column].map(codes).fillna(NODATA).astype(np.uint8).to_numpy()
    grid[tiles["row"].to_numpy(), tiles["col"].to_numpy()] = values
    return grid


def agreement(
    tiles: pd.DataFrame,
    map_classes: Sequence[str],
    older: str = "older_class",
    newer: str = "predicted_class",
) -> dict:
    """Accuracy and confusion matrix (rows older labels, columns predictions) over tiles that have
    both; how many were left out and why is reported, not hidden."""
    both = tiles[older].notna() & tiles[newer].notna()
    compared = tiles[both]
    matrix = pd.crosstab(
        pd.Categorical(compared[older], categories=list(map_classes)),
        pd.Categorical(compared[newer], categories=list(map_classes)),
        dropna=False,
    )
    n = int(both.sum())
    return {
        "tiles": int(len(tiles)),
        "compared_tiles": n,
        "tiles_without_older_label": int(tiles[older].isna().sum()),
        "tiles_without_prediction": int(tiles[newer].isna().sum()),
        "accuracy": float((compared[older] == compared[newer]).mean()) if n else None,
        "classes": list(map_classes),
        "confusion_matrix": matrix.to_numpy().astype(int).tolist(),
    }


def change_candidates(
    tiles: pd.DataFrame,
    from_classes: Sequence[str],
    to_class: str,
    min_probability: float,
    *,
    prediction: str = "predicted_class",
    min_older_share: float = 0.0,
) -> pd.DataFrame:
    """Tiles whose older label is one of ``from_classes``, covering at least ``min_older_share`` of
    the tile (``older_share``), and whose newer prediction is ``to_class`` with probability
    ``prob_<to_class>`` at least ``min_probability``, as ``change_probability``; ranked by it (ties by
    tile id, so the order is stable), rank 1 the most confident.

    Why the share: a tile half developed already is labelled Undeveloped by a hair, and the model
    rightly sees buildings in it; that is an edge, not a change.
    """
    probability = tiles[f"prob_{to_class}"]
    chosen = (
        tiles["older_class"].isin(list(from_classes))
        & (tiles[prediction] == to_class)
        & (probability >= min_probability)
    )
    if min_older_share > 0:
        chosen &= tiles["older_share"] >= min_older_share
    selected = tiles[chosen].assign(change_probability=probability[chosen])
    ranked = selected.sort_values(["change_probability", "tile_id"], ascending=[False, True])
    return ranked.reset_index(drop=True).assign(rank=np.arange(1, len(ranked) + 1))


def class_summary(
    tiles: pd.DataFrame, map_classes: Sequence[str], columns: Mapping[str, str]
) -> pd.DataFrame:
    """Counts and percent of tiles per class for each labelling (like the walkthrough's table),
    plus a ``nodata`` row so failed or masked tiles are counted, never dropped. Percent is of all
    tiles, so each column sums to 100."""
    total = len(tiles)
    rows = list(map_classes) + ["nodata"]
    table = pd.DataFrame(index=pd.Index(rows, name="class"))
    for title, column in columns.items():
        counts = tiles[column].fillna("nodata").value_counts().reindex(rows, fill_value=0)
        table[f"{title}_tiles"] = counts.astype(int)
        table[f"{title}_percent"] = (100.0 * counts / total).round(2) if total else 0.0
    return table.reset_index()
