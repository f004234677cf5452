"""The old import path of two helpers that notebooks/walkthrough.ipynb still imports from here.

The nodes live in inference.py (plan, score, collect), reporting.py (tables and checks) and maps.py
(rasters and figures); these helpers live in params.py. Import from there: once the notebook does,
this module can go.
"""

from landuse_kedro.pipelines.development_inference.params import map_classes, region_names

__all__ = ["map_classes", "region_names"]
