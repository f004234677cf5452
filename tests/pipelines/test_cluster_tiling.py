"""data_preparation, training and development_inference on a real standalone cluster (a master and two
workers, from the pyspark package): executors open the scenes, read and label the tile windows,
write the tile PNGs, compute the training features and score the windows themselves, and the outputs
equal a local run's."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from tests.helpers import make_project_copy, run_pipeline, without_run_ids

pytestmark = [pytest.mark.spark, pytest.mark.slow]

OUTPUTS = "data/07_model_output"


def _project(root: Path, chain: Path) -> Path:
    """A project copy with the chain's raw rasters and trained scoring model, nothing else."""
    project = make_project_copy(root)
    for folder in ("01_raw", "06_models"):
        shutil.copytree(chain / "data" / folder, project / "data" / folder, dirs_exist_ok=True)
    return project


@pytest.fixture(scope="module")
def runs(tiny_chain_project, standalone_cluster, tmp_path_factory, monkeypatch_module):
    """The same two pipelines, same configuration (env `standalone`), once on local[2] and once on
    the cluster; only SPARK_MASTER_URL differs."""
    monkeypatch_module.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    projects, applications = {}, {}
    for name in ("local", "cluster"):
        project = _project(tmp_path_factory.mktemp(name) / "project", tiny_chain_project)
        master = standalone_cluster.wait() if name == "cluster" else "local[2]"
        monkeypatch_module.setenv("SPARK_MASTER_URL", master)
        before = standalone_cluster.applications() if name == "cluster" else 0
        # training last: development_inference scores with the chain's model in both runs
        for pipeline in ("data_preparation", "development_inference", "training"):
            run_pipeline(project, pipeline, env="standalone")
        if name == "cluster":
            applications[name] = standalone_cluster.applications() - before
        projects[name] = project
    return projects, applications


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_pipelines_ran_on_the_cluster(runs):
    _, applications = runs
    assert applications["cluster"] == 3  # one Spark application per pipeline run, none local


def test_training_on_the_cluster_learns_what_a_local_run_learns(runs):
    """The workers computed the features (the table's rows) and the head trained on them: the same
    scores and confusion matrices as on local[2]."""
    projects, _ = runs
    metrics, features = {}, {}
    for name, project in projects.items():
        data = project / "data"
        metrics[name] = json.loads((data / "08_reporting/training_metrics.json").read_text())
        history = json.loads((data / "08_reporting/training_history.json").read_text())
        assert history["head_input"] == "cached_features" and history["feature_cache"]["computed_tiles"] > 0
        features[name] = pd.read_parquet(data / "04_feature/tile_features.parquet")
    assert (
        len(features["local"]) == len(features["cluster"]) > 0 and features["cluster"]["error"].isna().all()
    )
    for key in ("accuracy_6", "accuracy_3", "six_class", "three_class", "train_tiles", "validation_tiles"):
        assert metrics["cluster"][key] == metrics["local"][key], key
    for precision in ("fp32", "int8"):
        assert (
            metrics["cluster"]["precisions"][precision]["accuracy_6"]
            == metrics["local"]["precisions"][precision]["accuracy_6"]
        ), precision


def test_cluster_tiles_and_manifest_equal_the_local_ones(runs):
    projects, _ = runs
    local, cluster = (projects[name] / "data/05_model_input" for name in ("local", "cluster"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(local / "tile_manifest.parquet"), pd.read_parquet(cluster / "tile_manifest.parquet")
    )
    pngs = sorted(p.relative_to(local) for p in local.rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(cluster) for p in cluster.rglob("*.png"))
    assert all(filecmp.cmp(local / p, cluster / p, shallow=False) for p in pngs)


def test_cluster_maps_equal_the_local_ones(runs):
    projects, _ = runs
    local, cluster = (projects[name] / OUTPUTS for name in ("local", "cluster"))
    tiles = pd.read_parquet(local / "development_tile_classes.parquet")
    assert len(tiles) > 0 and tiles["error"].isna().all()
    pd.testing.assert_frame_equal(
        tiles, pd.read_parquet(cluster / "development_tile_classes.parquet"), check_exact=False, atol=1e-5
    )
    for name in [f"regions/middlesex/{kind}_classes.tif" for kind in ("older", "predicted", "smoothed")] + [
        "county/smoothed_classes.tif"
    ]:
        with rasterio.open(local / name) as a, rasterio.open(cluster / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.transform == b.transform and a.crs == b.crs
    candidates = "regions/middlesex/change_candidates.geojson"
    local_candidates, cluster_candidates = (
        json.loads((root / candidates).read_text()) for root in (local, cluster)
    )
    assert local_candidates["provenance"]["run_id"] != cluster_candidates["provenance"]["run_id"]
    assert without_run_ids(local_candidates) == without_run_ids(cluster_candidates)
