"""The chain on a real Azure Storage API: raw scenes read from, and outputs written to, an
``abfss://`` container on Azurite through the `azurite` environment (configuration only), with the
same results as the local run of the same tiny scene (`tiny_chain_project`, env `test`).

Equal to the local run proves the storage layer changes nothing, not that either run is right.
The local outputs are checked against known truth elsewhere: tiles and labels in
tests/pipelines/test_data_preparation.py (NLCD bands of known codes at known map coordinates, PNG
pixels equal to their scene window); training in tests/pipelines/test_training.py (accuracy above
chance on tiles of learnable colours, images paired with their own labels); scoring in
tests/pipelines/test_spark_scoring.py (labelled tiles and damaged files, accuracy equal to the
model scored in process, and to the training evaluation on this same chain); development_inference
in tests/pipelines/test_development_inference.py (predictions, older labels and change candidates of
a synthetic region with a colour-rule model, so the truth of every tile is known)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import sys
from pathlib import Path

import adlfs
import fsspec
import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader

from landuse_kedro.settings import CONFIG_LOADER_ARGS
from tests.environments.conftest import SESSION_KEY
from tests.helpers import load_catalog, make_project_copy, run_pipeline

pytestmark = [pytest.mark.azurite, pytest.mark.slow, pytest.mark.spark]

ENV = "azurite"
CHAIN = ("data_preparation", "training", "spark_scoring", "development_inference")
RAW = ("naip", "nlcd")
# conf/azurite/globals.yml
DATA_ROOT = "abfss://landuse@devstoreaccount1.dfs.core.windows.net/azurite"
# Written by Spark: locally as Spark's `parquet`, in env azurite as `fsspec_parquet`
# (conf/azurite/globals.yml, spark_table_format: Hadoop has no Azure driver here).
SPARK_WRITTEN = {"scoring_predictions", "development_predictions"}
# Each table's row key and the columns compared exactly: files (an image, its folder's class) and tile
# windows (a tile of a scene: no file path, no folder).
ROWS = {
    "scoring_predictions": ("image_id", ["true_label"]),
    "development_predictions": ("tile_id", ["scene", "row", "col", "label_class"]),
}
# Not compared: wall-clock timings, and the ONNX file's size (tf2onnx names graph nodes after
# counters that differ between two exports in one process; the predictions below are equal).
NOT_COMPARED = re.compile(
    r"seconds|per_second|elapsed|duration|_time|^bytes$|^run_id$|^version$|^sha256$"
)  # this run's own


def _test_parameters(project: Path) -> dict:
    """The `test` environment's tiny sizes, passed as runtime parameters: one home for them."""
    loader = OmegaConfigLoader(
        conf_source=str(project / "conf"),
        env="test",
        **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "custom_resolvers"},
    )
    return loader["parameters"]


@pytest.fixture(scope="module")
def azurite_chain(azurite, tiny_chain_project: Path, tmp_path_factory) -> dict:
    """Upload the local run's raw scene to the container, then run the chain in env `azurite`."""
    fs = adlfs.AzureBlobFileSystem(connection_string=azurite)
    for folder in RAW:
        fs.put(str(tiny_chain_project / "data" / "01_raw" / folder), f"{DATA_ROOT}/01_raw/", recursive=True)
    project = make_project_copy(tmp_path_factory.mktemp("azurite_chain") / "project")
    params = _test_parameters(project)
    logs = _LogCapture()
    spark_log = tmp_path_factory.mktemp("spark_logs") / "jvm_and_workers.log"
    with pytest.MonkeyPatch.context() as patch, _process_output_to(spark_log):
        patch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
        _stop_spark_jvm()  # Spark's Python workers must see the variable above
        logging.getLogger().addHandler(logs)
        try:
            for name in CHAIN:
                run_pipeline(project, name, env=ENV, params=params)
        finally:
            logging.getLogger().removeHandler(logs)
            _stop_spark_jvm()  # and no later test inherits it
        remote = _outputs(project, ENV, params)
    return {
        "project": project,
        "remote": remote,
        "local": _outputs(tiny_chain_project, "test"),
        "fs": fs,
        "logs": logs.text,
        "spark_log": spark_log,
    }


@contextlib.contextmanager
def _process_output_to(path: Path):
    """This process's stdout and stderr (file descriptors 1 and 2) go to ``path``: the Spark JVM
    started meanwhile, and the Python workers it starts, inherit them and log there."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def _stop_spark_jvm() -> None:
    """Spark's Python workers (which run `fsspec_parquet`) get the environment of the JVM, fixed
    when an earlier test launched it; the next session launches a new one with today's."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    assert SparkContext._active_spark_context is None, "a Spark session is still running"
    gateway.shutdown()
    gateway.proc.stdin.close()  # the JVM exits when its stdin closes
    gateway.proc.wait(timeout=30)
    SparkContext._gateway = SparkContext._jvm = None


def _outputs(project: Path, env: str, params: dict | None = None) -> dict:
    """What the comparisons need, loaded through the environment's catalog (local paths are
    relative to the project, hence the chdir)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        catalog = load_catalog(project, env=env, params=params)
        tiles = catalog.load("model_input_tiles")
        first = sorted(tiles)[0]
        region = catalog.load("params:development_inference")["regions"][0]
        return {
            "catalog": catalog,
            "tile_manifest": catalog.load("tile_manifest"),
            "tile_keys": sorted(tiles),
            "first_tile": np.asarray(tiles[first]()),
            "training_metrics": catalog.load("training_metrics"),
            "scoring_metrics": catalog.load("scoring_metrics"),
            **{
                name: catalog.load(name)[region]()
                for name in ("development_agreement", "development_summary")
            },
            "development_tile_classes": catalog.load("development_tile_classes"),
            "predicted_class_raster": catalog.load("region_class_rasters")[f"{region}/predicted"]().read(),
            "class_raster_mosaic": catalog.load("class_raster_mosaics")["smoothed"]().read(),
            **{name: _spark_parquet(catalog, name) for name in SPARK_WRITTEN},
            "tile_features": _spark_parquet(catalog, "tile_features@spark"),
        }


def _spark_parquet(catalog, name: str) -> pd.DataFrame:
    """The table's part files read without Spark (the chain's next nodes read it through Spark)."""
    fs, root = fsspec.core.url_to_fs(str(catalog.get(name)._describe()["filepath"]))
    parts = sorted(fs.glob(f"{root}/part-*.parquet"))
    assert parts, f"{name}: no part files under {root}"
    frames = []
    for part in parts:
        with fs.open(part, "rb") as handle:
            frames.append(pd.read_parquet(handle))
    return pd.concat(frames, ignore_index=True)


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.records)


def test_every_output_lives_in_the_container(azurite_chain: dict) -> None:
    catalog, fs = azurite_chain["remote"]["catalog"], azurite_chain["fs"]
    project = azurite_chain["project"]
    stored = fs.find(DATA_ROOT)
    layers = {path.split("/azurite/", 1)[1].split("/", 1)[0] for path in stored}
    assert {
        "01_raw",
        "04_feature",
        "05_model_input",
        "06_models",
        "07_model_output",
        "08_reporting",
    } <= layers
    for name in ("tile_manifest", "scoring_model", "training_metrics", "scoring_metrics"):
        assert catalog.exists(name), name
    for name in SPARK_WRITTEN:  # Spark's tables too: part files only, no staging left behind
        table = [path for path in stored if f"/07_model_output/{name}.parquet/" in path]
        names = [path.rsplit("/", 1)[1] for path in table]
        assert names and all(n.startswith("part-") and n.endswith(".parquet") for n in names), table
    # Nothing at all was written to the project's local data folder.
    local_files = [p for p in (project / "data").rglob("*") if p.is_file()]
    assert not local_files, local_files


def test_the_stac_catalog_in_the_container_names_files_with_their_checksums(azurite_chain: dict) -> None:
    """Written through the catalog on abfss:// like on disk: relative hrefs that resolve in the container,
    sizes and sha256 that match the blobs."""
    catalog, fs = azurite_chain["remote"]["catalog"], azurite_chain["fs"]
    documents = catalog.load("stac_catalog")
    items = [key for key in documents if "/items/" in key]
    assert "catalog" in documents and items, sorted(documents)
    checked = 0
    for key in items:
        item = documents[key]()
        for asset in item["assets"].values():
            relative = posixpath.normpath(
                posixpath.join("07_model_output/stac", posixpath.dirname(key), asset["href"])
            )
            path = f"{DATA_ROOT}/{relative}"
            with fs.open(path, "rb") as handle:
                blob = handle.read()
            assert len(blob) == asset["file:size"], path
            assert "1220" + hashlib.sha256(blob).hexdigest() == asset["file:checksum"], path
            checked += 1
    assert checked >= 4, checked  # the class rasters and probabilities at least


def test_tiles_and_manifest_equal_the_local_run(azurite_chain: dict) -> None:
    remote, local = azurite_chain["remote"], azurite_chain["local"]
    pd.testing.assert_frame_equal(remote["tile_manifest"], local["tile_manifest"])
    assert remote["tile_keys"] == local["tile_keys"] and local["tile_keys"]
    np.testing.assert_array_equal(remote["first_tile"], local["first_tile"])


def test_training_features_were_computed_into_the_container(azurite_chain: dict) -> None:
    """The Spark workers read the tiles from the container and appended their features to the table
    there (``fsspec_parquet``): the same rows as the local run's table."""
    remote, local = azurite_chain["remote"]["tile_features"], azurite_chain["local"]["tile_features"]
    assert len(remote) == len(local) > 0 and remote["error"].isna().all()
    key = ["tile_id", "view"]
    remote, local = (rows.sort_values(key).reset_index(drop=True) for rows in (remote, local))
    same = [*key, "split", "content_sha256"]  # the same PNG bytes in both runs, so the same content keys
    pd.testing.assert_frame_equal(remote[same], local[same])
    features = [np.frombuffer(blob, np.float16) for blob in remote["features"]]
    expected = [np.frombuffer(blob, np.float16) for blob in local["features"]]
    np.testing.assert_allclose(np.stack(features), np.stack(expected), atol=1e-2, rtol=1e-2)


def test_metrics_equal_the_local_run(azurite_chain: dict) -> None:
    remote, local = azurite_chain["remote"], azurite_chain["local"]
    for name in ("training_metrics", "scoring_metrics"):
        _assert_close(remote[name], local[name], name)


@pytest.mark.parametrize("name", sorted(SPARK_WRITTEN))
def test_predictions_equal_the_local_run(azurite_chain: dict, name: str) -> None:
    key, own = ROWS[name]
    columns = [key, *own, "predicted_label", "predicted_label_3", "error"]
    remote_rows, local_rows = azurite_chain["remote"][name], azurite_chain["local"][name]
    assert len(remote_rows) == len(local_rows) > 0
    remote_rows = remote_rows.sort_values(key).reset_index(drop=True)
    local_rows = local_rows.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(remote_rows[columns], local_rows[columns])
    probabilities = [c for c in local_rows.columns if c.startswith("prob_")]
    np.testing.assert_allclose(remote_rows[probabilities], local_rows[probabilities], atol=1e-5)
    if name == "scoring_predictions":  # Spark read the image files from the container, not a local copy
        assert remote_rows["path"].str.startswith("abfs").all(), remote_rows["path"].head()


def test_development_outputs_equal_the_local_run(azurite_chain: dict) -> None:
    remote, local = azurite_chain["remote"], azurite_chain["local"]
    for name in ("predicted_class_raster", "class_raster_mosaic"):
        np.testing.assert_array_equal(remote[name], local[name])
    for name in ("development_summary", "development_tile_classes"):
        pd.testing.assert_frame_equal(remote[name], local[name], check_exact=False, atol=1e-9)
    _assert_close(remote["development_agreement"], local["development_agreement"], "agreement")


def test_no_secret_in_the_run_logs(azurite_chain: dict) -> None:
    assert azurite_chain["logs"], "the chain logged nothing"
    assert SESSION_KEY not in azurite_chain["logs"]


def test_no_secret_in_any_output_or_spark_log(azurite_chain: dict) -> None:
    """The account key is in the environment of the driver, the JVM and the Python workers, never
    in an output (in the container or the project folder) or the JVM's and workers' output."""
    key = SESSION_KEY.encode()
    spark_log = azurite_chain["spark_log"].read_bytes()
    assert b"WARN" in spark_log or b"INFO" in spark_log, "the JVM's output was not captured"
    fs = azurite_chain["fs"]
    blobs = [path for path in fs.find(DATA_ROOT) if not path.endswith("/")]
    local = [p for p in azurite_chain["project"].rglob("*") if p.is_file()]
    assert len(blobs) > 50 and local, (len(blobs), len(local))  # outputs of four pipelines
    contents = {**{blob: fs.cat_file(blob) for blob in blobs}, **{str(p): p.read_bytes() for p in local}}
    assert sum(map(len, contents.values())) > 1_000_000  # pixels, models, tables: not empty
    assert key not in spark_log
    assert [name for name, data in contents.items() if key in data] == []


def _assert_close(remote, local, where: str) -> None:
    """Same structure; numbers equal within 1e-6 (same inputs, same seeds, different storage),
    except wall-clock timings."""
    if isinstance(local, dict):
        assert set(remote) == set(local), where
        for key in local:
            if not NOT_COMPARED.search(key):
                _assert_close(remote[key], local[key], f"{where}.{key}")
    elif isinstance(local, list):
        assert len(remote) == len(local), where
        for i, (remote_item, local_item) in enumerate(zip(remote, local, strict=True)):
            _assert_close(remote_item, local_item, f"{where}[{i}]")
    elif isinstance(local, float):
        assert remote == pytest.approx(local, abs=1e-6), where
    else:
        assert remote == local, f"{where}: {json.dumps(remote)[:200]} != {json.dumps(local)[:200]}"
