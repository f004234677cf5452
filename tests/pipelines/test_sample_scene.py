from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from landuse_kedro.classes import class_lookup
from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.pipelines.sample_scene import nodes
from landuse_kedro.raster import (
    labels_on_grid,
    plurality,
    tile_value_counts,
    to_classes,
)
from tests.helpers import load_catalog, make_project_copy, registered_pipelines, run_pipeline

ALLOWED_CODES = {11, 21, 22, 23, 24, 31, 41, 42, 43, 51, 52, 71, 72, 73, 74, 81, 82, 90, 95}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict]:
    """The pipeline run once through a real KedroSession in the test environment (tiny scenes)."""
    project = make_project_copy(tmp_path_factory.mktemp("sample") / "project")
    run_pipeline(project, "sample_scene")
    catalog = load_catalog(project)
    params = catalog.load("params:sample_scene")
    land_cover = catalog.load("params:land_cover")
    return project / "data" / "01_raw", {"sample_scene": params, "land_cover": land_cover}


def load_folder(folder: Path) -> dict:
    return {path.stem: GeoTiffDataset(filepath=str(path)).load() for path in sorted(folder.glob("*.tif"))}


def scene_labels(nlcd, scene) -> np.ndarray:
    """NLCD codes on the scene grid, reprojected the way data_preparation does it."""
    return labels_on_grid(nlcd, scene.crs, scene.transform, scene.height, scene.width)


def test_scenes_are_naip_like(generated):
    raw, params = generated
    config = params["sample_scene"]
    scenes = load_folder(raw / "naip")
    years = config["years"].values()
    assert set(scenes) == {f"{region}_{year}" for region in config["regions"] for year in years}
    for key, scene in scenes.items():
        region = key.rsplit("_", 1)[0]
        assert scene.crs == CRS.from_user_input(config["regions"][region]["crs"])
        assert scene.res == (1.0, 1.0)
        assert (scene.width, scene.height, scene.count) == (config["scene_size"],) * 2 + (4,)
        assert scene.dtypes == ("uint8",) * 4
        with scene.open() as dataset:
            assert dataset.profile["tiled"] and dataset.compression == rasterio.enums.Compression.deflate
    assert {scene.crs.to_epsg() for scene in scenes.values()} == {26918, 26919}


def test_regions_are_disjoint(generated):
    raw, _ = generated
    boxes = [
        transform_bounds(s.crs, "EPSG:5070", *s.bounds)
        for s in load_folder(raw / "naip").values()
        if s.path.endswith("_2012.tif")
    ]
    for i, (l1, b1, r1, t1) in enumerate(boxes):
        for l2, b2, r2, t2 in boxes[i + 1 :]:
            assert r1 <= l2 or r2 <= l1 or t1 <= b2 or t2 <= b1


def test_nlcd_is_albers_30m_codes_only_and_covers_every_scene(generated):
    raw, params = generated
    nlcd = load_folder(raw / "nlcd")
    assert set(nlcd) == {f"nlcd_{year}" for year in params["sample_scene"]["nlcd_years"].values()}
    for raster in nlcd.values():
        assert raster.crs.to_epsg() == 5070 and raster.res == (30.0, 30.0) and raster.nodata == 0
        assert raster.dtypes == ("uint8",)
        codes = set(np.unique(raster.read(indexes=1)).tolist())
        assert codes - {0} <= ALLOWED_CODES and 0 in codes  # nodata margin around the regions
        assert (raster.transform.c - nodes.NLCD_ORIGIN[0]) % 30 == 0
        for scene in load_folder(raw / "naip").values():
            assert (scene_labels(raster, scene) != 0).all(), f"{scene.path} not covered"


def test_same_seed_same_data_and_another_seed_differs(generated):
    _, params = generated
    config = copy.deepcopy(params["sample_scene"])
    config["regions"] = {"worcester": config["regions"]["worcester"]}
    first, again = nodes.generate_land_cover(config), nodes.generate_land_cover(copy.deepcopy(config))
    np.testing.assert_array_equal(first["worcester"].codes["older"], again["worcester"].codes["older"])
    scene, scene_again = (nodes.render_naip_scenes(lc, config)["worcester_2016"]() for lc in (first, again))
    np.testing.assert_array_equal(scene.array, scene_again.array)
    nlcd = nodes.make_nlcd_rasters(first, config)["nlcd_2011"]
    np.testing.assert_array_equal(nlcd.array, nodes.make_nlcd_rasters(again, config)["nlcd_2011"].array)

    other = nodes.render_naip_scenes(
        nodes.generate_land_cover({**config, "seed": config["seed"] + 1}), config
    )
    assert not np.array_equal(other["worcester_2016"]().array, scene.array)


def test_development_grows_exactly_where_the_truth_says(generated):
    raw, params = generated
    land_cover = nodes.generate_land_cover(params["sample_scene"])
    truth = load_folder(raw / "sample_truth")
    assert set(truth) == set(land_cover)
    dev = list(nodes.DEVELOPED)
    for name, region in land_cover.items():
        older, newer = (region.scene(region.codes[year]) for year in ("older", "newer"))
        mask = truth[name].read(indexes=1).astype(bool)
        assert truth[name].crs == region.crs and truth[name].transform == region.scene_transform
        np.testing.assert_array_equal(np.isin(newer, dev), np.isin(older, dev) | mask)
        assert not (np.isin(older, dev) & mask).any()
        np.testing.assert_array_equal(older[~mask], newer[~mask])  # nothing else changes
    assert truth["middlesex"].read().sum() > 0

    # the same change survives into the 30 m NLCD rasters
    nlcd = load_folder(raw / "nlcd")
    scene = load_folder(raw / "naip")["middlesex_2016"]
    before, after = (np.isin(scene_labels(nlcd[key], scene), dev) for key in ("nlcd_2011", "nlcd_2016"))
    mask = truth["middlesex"].read(indexes=1).astype(bool)
    grown = after & ~before
    assert (grown & mask).sum() / grown.sum() > 0.9
    assert (grown & mask).sum() / mask.sum() > 0.9


def test_label_noise_changes_only_the_look_of_undeveloped_parcels(generated):
    config = {
        **copy.deepcopy(generated[1]["sample_scene"]),
        "label_noise": {"share": 1.0, "looks_like": {"Shrub": "Herbaceous", "Barren": "Cultivated"}},
    }
    for region in nodes.generate_land_cover(config).values():
        for year in ("older", "newer"):
            labels, drawn = region.codes[year], region.appearance(year)
            differs = labels != drawn
            assert differs.any()
            assert set(np.unique(labels[differs]).tolist()) <= {31, 51, 52}
            assert set(np.unique(drawn[differs]).tolist()) <= {71, 72, 73, 74, 95, 81, 82}
            np.testing.assert_array_equal(np.isin(drawn, nodes.DEVELOPED), np.isin(labels, nodes.DEVELOPED))


def test_every_class_has_pure_tiles_in_every_older_scene_at_test_size(generated):
    """What the tiny test layout guarantees: tile-sized block parcels, so each region's older scene
    has a >= 90% pure tile of every class after the 30 m Albers round trip."""
    raw, params = generated
    land_cover = params["land_cover"]
    lut = class_lookup(land_cover["nlcd_to_class"], land_cover["classes"])
    nlcd = load_folder(raw / "nlcd")[f"nlcd_{params['sample_scene']['nlcd_years']['older']}"]
    for key, scene in load_folder(raw / "naip").items():
        if not key.endswith(str(params["sample_scene"]["years"]["older"])):
            continue
        classes = to_classes(scene_labels(nlcd, scene), lut, nodata=0)
        winner, purity = plurality(tile_value_counts(classes, 224), len(land_cover["classes"]))
        assert set(winner[purity >= 0.9].tolist()) == set(range(len(land_cover["classes"]))), key


def test_near_infrared_follows_vegetation(generated):
    raw, params = generated
    nlcd = load_folder(raw / "nlcd")["nlcd_2011"]
    scene = load_folder(raw / "naip")["norfolk_2012"]
    codes = scene_labels(nlcd, scene)
    red, nir = (scene.read(indexes=band).astype(float) for band in (1, 4))
    ndvi = (nir - red) / (nir + red + 1)
    mean = {
        kind: ndvi[np.isin(codes, group)].mean()
        for kind, group in {
            "forest": [41, 42, 43],
            "grass": [71],
            "barren": [31],
            "water": [11],
            "developed": [22, 23, 24],
        }.items()
    }
    assert mean["forest"] > mean["barren"] and mean["grass"] > mean["developed"] > mean["water"]
    assert mean["water"] < 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"regions": {"x": {"crs": "EPSG:4326", "lon": -71, "lat": 42}}}, "not projected"),
        ({"nlcd_codes": {"Barren": {31: 0.5, 99: 0.5}}}, "outside NLCD"),
        ({"scene_size": 10}, "at least 64"),
        ({"layout": "hexagons"}, "layout"),
        (
            {
                "regions": {
                    "a": {"crs": "EPSG:26919", "lon": -71.0, "lat": 42.0},
                    "b": {"crs": "EPSG:26919", "lon": -71.001, "lat": 42.0},
                }
            },
            "overlap",
        ),
    ],
)
def test_bad_parameters_are_named(generated, change, message):
    config = {**copy.deepcopy(generated[1]["sample_scene"]), **change}
    if "nlcd_codes" in change:
        config["nlcd_codes"] = {**generated[1]["sample_scene"]["nlcd_codes"], **change["nlcd_codes"]}
    with pytest.raises(ValueError, match=message):
        nodes.generate_land_cover(config)


def test_never_part_of_the_default_run():
    pipelines = registered_pipelines()
    generated = {"naip_scenes", "nlcd_rasters", "sample_change_truth"}
    assert generated <= pipelines["sample_scene"].all_outputs()
    assert not generated & pipelines["__default__"].all_outputs()


def test_hdinsight_refuses_to_generate(project_copy, monkeypatch):
    """The cluster environment holds real data: asking for the generator there is an error, not a write."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "placeholder")
    catalog = load_catalog(project_copy, env="hdinsight")
    parameters = catalog.load("params:sample_scene")
    assert parameters["allowed"] is False
    with pytest.raises(RuntimeError, match="switched off in this environment"):
        nodes.generate_land_cover(parameters)


def test_a_users_nlcd_is_never_replaced_by_the_sample_scene(generated, project_copy):
    """README step 2 puts a real NLCD in 01_raw before any NAIP is there: `kedro run --pipelines
    sample_scene` then refuses, writes nothing and says what to do."""
    nlcd = project_copy / "data/01_raw/nlcd/nlcd_2011.tif"
    nlcd.parent.mkdir(parents=True)
    shutil.copy(next((generated[0] / "nlcd").glob("*.tif")), nlcd)
    before = nlcd.read_bytes()
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", "sample_scene", "--env", "test"]
    done = subprocess.run(command, cwd=project_copy, capture_output=True, text=True, timeout=600, check=False)
    output = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
    assert done.returncode != 0
    assert "sample_scene writes only into an empty data/01_raw" in output and "NLCD: nlcd_2011.tif" in output
    assert "nothing was written" in output
    assert nlcd.read_bytes() == before
    assert sorted(p.name for p in (project_copy / "data/01_raw").rglob("*.tif")) == ["nlcd_2011.tif"]


def test_make_run_generates_only_into_an_empty_raw_folder(tmp_path):
    """The Makefile's `run` recipe, with the install step up to date and kedro replaced by a stub
    that records its arguments: an empty 01_raw gets the sample scene, a user's lone NLCD stops the
    run with what to do, and both folders filled run kedro on them."""
    project_root = Path(__file__).resolve().parents[2]
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(project_root / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv/.installed").touch()  # newer than pyproject.toml: `install` has nothing to do
    stub = tmp_path / "kedro_stub"
    stub.write_text('#!/bin/sh\necho "$*" >> kedro_calls\n')
    stub.chmod(0o755)

    def make_run() -> tuple[int, str, list[str]]:
        calls = tmp_path / "kedro_calls"
        calls.unlink(missing_ok=True)
        done = subprocess.run(
            ["make", "--no-print-directory", "run", f"KEDRO={stub}"],
            cwd=tmp_path,
            capture_output=True,
            check=False,
            text=True,
        )
        return (
            done.returncode,
            done.stdout + done.stderr,
            calls.read_text().splitlines() if calls.exists() else [],
        )

    assert make_run()[2] == ["run --pipelines sample_scene", "run"]  # empty: generated, then the run
    nlcd = tmp_path / "data/01_raw/nlcd/nlcd_2011.tif"
    nlcd.parent.mkdir(parents=True)
    nlcd.write_bytes(b"a user's own NLCD")
    code, output, calls = make_run()
    assert code != 0 and calls == [] and nlcd.read_bytes() == b"a user's own NLCD"
    assert "data/01_raw/nlcd holds your rasters but data/01_raw/naip has none" in output
    assert "Put the missing rasters in data/01_raw/naip" in output
    (tmp_path / "data/01_raw/naip").mkdir()
    (tmp_path / "data/01_raw/naip/m_1_2011.tif").write_bytes(b"NAIP")
    code, output, calls = make_run()
    assert code == 0 and calls == ["run"] and "the sample scene is not generated" in output
