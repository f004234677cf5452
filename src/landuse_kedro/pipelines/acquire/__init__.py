"""acquire: NAIP and NLCD from a STAC API into 01_raw (run on purpose, never in __default__).

Nodes take parameters and return rasters; the catalog decides where they are written (``naip_scenes``,
``nlcd_rasters``). Pixels are read over HTTP range requests: a NAIP year is a mosaic of its quarter
quads, copied window by window through warped VRTs onto one grid, and NLCD is read only in windows
around the regions, never whole. One home each:

- :mod:`.stac`: the STAC API (``search_naip``, an NLCD edition's item);
- :mod:`.mosaic`: which quads and which grid (``mosaic_naip``);
- :mod:`.mosaic_stream`: the quads copied onto that grid, strip by strip (:class:`NaipMosaic`);
- :mod:`.nlcd`: NLCD windows (``read_nlcd``);
- :mod:`.report`: the provenance of 01_raw/naip (``summarise_acquisition``);
- :mod:`.regions`: the regions, years and scene keys as parameters and 01_raw name them;
- :mod:`.tokens`: an href's token, added before a read and removed wherever it is shown;
- :mod:`.hrefs` and :mod:`.remote_file`: the trust policy and the reads it allows.
"""

from landuse_kedro.pipelines.acquire.pipeline import create_pipeline

__all__ = ["create_pipeline"]
