"""The class rasters are Cloud Optimized GeoTIFFs (rio-cogeo's validator: tiles, overviews after
the main image, IFD order), with their colour table and CRS, so QGIS or GDAL can open them straight
from storage with range requests (README, "Opening the maps from storage")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.raster import GeoRaster

PALETTE = {0: (0, 0, 0, 0), 1: (200, 0, 0, 255), 2: (230, 200, 90, 255), 3: (20, 110, 40, 255)}
OVERVIEW_MIN = 512  # GDAL's COG driver adds overviews once a side exceeds its 512 px blocks


def assert_cog(path: Path, classes: set[int]) -> None:
    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    assert valid and not errors, (path, errors)
    with rasterio.open(path) as src:
        assert src.crs is not None and src.crs.is_projected, path
        assert src.count == 1 and src.dtypes[0] == "uint8"
        colormap = src.colormap(1)  # raises ValueError without a colour table
        assert all(colormap[value][3] == 255 for value in classes if value != src.nodata), path
        if max(src.width, src.height) > OVERVIEW_MIN:
            assert src.overviews(1), f"{path} ({src.width} x {src.height}) has no overviews"
            # nearest-neighbour overviews: no class appears that the map does not hold
            assert set(np.unique(src.read(1, out_shape=(src.height // 4, src.width // 4)))) <= set(
                np.unique(src.read(1))
            )


def test_cog_driver_writes_overviews_palette_and_crs(tmp_path):
    """Large enough for overviews; the same dataset options as the development_inference entries."""
    rng = np.random.default_rng(0)
    classes = np.kron(rng.integers(0, 4, (60, 60)), np.ones((20, 20))).astype(np.uint8)  # 1200 x 1200
    path = tmp_path / "predicted_classes.tif"
    GeoTiffDataset(filepath=str(path), save_args={"driver": "COG"}).save(
        GeoRaster(
            classes[None],
            "EPSG:26919",
            Affine(224, 0, 300_000, 0, -224, 4_700_000),
            nodata=0,
            colormap=PALETTE,
            categories=("nodata", "Developed", "Cultivated", "Forest"),
        )
    )
    assert_cog(path, set(PALETTE))
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2, 4]
        assert src.crs.to_epsg() == 26919
        assert src.colormap(1)[3] == PALETTE[3]
        np.testing.assert_array_equal(src.read(1), classes)
    plain = tmp_path / "plain.tif"  # the validator can fail: a striped GeoTIFF is no COG
    with rasterio.open(
        plain,
        "w",
        driver="GTiff",
        width=1200,
        height=1200,
        count=1,
        dtype="uint8",
        crs="EPSG:26919",
        transform=Affine(224, 0, 300_000, 0, -224, 4_700_000),
    ) as dst:
        dst.write(classes[None])
    assert not cog_validate(str(plain), quiet=True)[0]


def test_development_inference_class_rasters_are_cogs(tiny_chain_project):
    output = tiny_chain_project / "data" / "07_model_output"
    regions = sorted((output / "regions").glob("*/*_classes.tif"))
    county = sorted((output / "county").glob("*_classes.tif"))
    assert {p.name for p in regions} == {"older_classes.tif", "predicted_classes.tif", "smoothed_classes.tif"}
    assert {p.name for p in county} == {"older_classes.tif", "predicted_classes.tif", "smoothed_classes.tif"}
    for path in regions + county:
        with rasterio.open(path) as src:
            values = set(np.unique(src.read(1)).tolist())
        assert len(values) > 1, path  # a real map, not an empty raster
        assert_cog(path, values)


def test_large_map_gets_overviews_through_the_catalog_entry(tmp_path, size=600):
    """The catalog entry's own options (loaded from conf/base), on a map big enough for overviews."""
    import yaml

    conf = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "conf/base/catalog_development_inference.yml").read_text()
    )
    options = conf["region_class_rasters"]["dataset"]
    assert options["save_args"]["driver"] == "COG"
    path = tmp_path / "smoothed_classes.tif"
    classes = (np.arange(size * size).reshape(size, size) % 4).astype(np.uint8)
    GeoTiffDataset(filepath=str(path), save_args=options["save_args"]).save(
        GeoRaster(classes[None], "EPSG:5070", Affine(224, 0, 0, 0, -224, 0), nodata=0, colormap=PALETTE)
    )
    assert_cog(path, set(PALETTE))


def test_development_inference_probability_rasters_are_cogs_with_named_scaled_bands(tiny_chain_project):
    """The probability COGs of every region and of the county pass the validator the class rasters
    pass; GDAL reads each band's name and the scale that turns its codes into probabilities."""
    output = tiny_chain_project / "data" / "07_model_output"
    paths = sorted((output / "regions").glob("*/probabilities.tif")) + [
        output / "county" / "probabilities.tif"
    ]
    assert len(paths) >= 2 and all(path.exists() for path in paths), paths
    for path in paths:
        valid, errors, _warnings = cog_validate(str(path), quiet=True)
        assert valid and not errors, (path, errors)
        with rasterio.open(path) as src:
            assert src.descriptions[-1] == "change_probability" and src.descriptions[0].startswith("prob_")
            assert set(src.scales) == {1 / 250} and set(src.offsets) == {0.0} and src.nodata == 255
            codes = src.read()
        assert codes.max() <= 255 and ((codes <= 250) | (codes == 255)).all(), path
        sums = codes[:-1][:, codes[0] != 255].sum(axis=0)  # each scored tile's class probabilities
        assert sums.size and np.abs(sums.astype(int) - 250).max() <= 4, (path, sums)  # sum to 1
