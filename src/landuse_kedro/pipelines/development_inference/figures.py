"""Matplotlib figures of the development maps, in the walkthrough's colours (developed red,
undeveloped green, water blue) but cultivated straw, as its white vanishes on a white page.
Figures only (``Figure`` objects, no pyplot state): the catalog saves them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

NODATA_COLOUR = "#000000"


def _class_colormap(
    map_classes: Sequence[str], colours: Mapping[str, str]
) -> tuple[ListedColormap, BoundaryNorm]:
    cmap = ListedColormap([NODATA_COLOUR] + [colours[name] for name in map_classes])
    norm = BoundaryNorm(np.arange(-0.5, len(map_classes) + 1), cmap.N)
    return cmap, norm


def class_maps(
    panels: Mapping[str, np.ndarray], map_classes: Sequence[str], colours: Mapping[str, str], title: str
) -> Figure:
    """Code grids side by side on one colour scale, with one legend (nodata included, so failed
    tiles are visible on the map, not blended into a class)."""
    cmap, norm = _class_colormap(map_classes, colours)
    first = next(iter(panels.values()))
    aspect = first.shape[1] / max(first.shape[0], 1)
    fig = Figure(figsize=(4.5 * len(panels) * max(aspect, 0.5), 5.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (panel_title, grid) in zip(axes[0], panels.items()):
        ax.imshow(grid, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(panel_title)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(facecolor=colours[name], edgecolor="0.3", label=name) for name in map_classes]
    handles.append(Patch(facecolor=NODATA_COLOUR, edgecolor="0.3", label="no data (failed or masked)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, title=title)
    return fig


@dataclass(frozen=True)
class GalleryItem:
    """One candidate: RGB crops (rows, cols, 3) of its 3x3 tile neighbourhood in both years."""

    title: str
    older: np.ndarray
    newer: np.ndarray


def candidate_gallery(
    items: Sequence[GalleryItem], older_title: str, newer_title: str, title: str, pairs_per_row: int = 2
) -> Figure:
    """A grid of candidates, ``pairs_per_row`` per row, each as its older and newer neighbourhood
    side by side with the candidate tile (the centre third) outlined; a figure that says so when
    there is no candidate."""
    if not items:
        fig = Figure(figsize=(6, 1.5))
        ax = fig.subplots()
        ax.text(0.5, 0.5, "No change candidates above the probability threshold.", ha="center", va="center")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        return fig
    n_rows = -(-len(items) // pairs_per_row)
    fig = Figure(figsize=(5.0 * pairs_per_row, 3.0 * n_rows + 0.4), layout="constrained")
    cells = fig.subfigures(n_rows, pairs_per_row, squeeze=False, wspace=0.04, hspace=0.02)
    for cell in cells.flat[len(items) :]:
        cell.set_visible(False)
    for cell, item in zip(cells.flat, items):
        axes = cell.subplots(1, 2)
        for ax, crop, year_title in ((axes[0], item.older, older_title), (axes[1], item.newer, newer_title)):
            ax.imshow(crop, interpolation="nearest")
            height, width = crop.shape[:2]
            ax.add_patch(
                Rectangle(
                    (width / 3 - 0.5, height / 3 - 0.5),
                    width / 3,
                    height / 3,
                    fill=False,
                    edgecolor="yellow",
                    linewidth=1.5,
                )
            )
            ax.set_title(year_title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        cell.suptitle(item.title, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
