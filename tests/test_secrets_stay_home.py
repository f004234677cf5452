"""Storage secrets never travel inside Spark tasks, and error strings are redacted before they are
stored: executors take credentials from their own environment."""

from __future__ import annotations

import base64
import os
import pickle

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from landuse_kedro.datasets import RasterSource, SparkPartitionedDataset
from landuse_kedro.raster import Grid
from landuse_kedro.storage import redact_environment_secrets, shippable
from landuse_kedro.tiling import ScenePlan

KEY = base64.b64encode(os.urandom(32)).decode()
CONNECTION = (
    f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:1/acct;"
)
OPTIONS = {"connection_string": CONNECTION, "connection_timeout": 5, "account_key": KEY}


def _source() -> RasterSource:
    return RasterSource(
        path="landuse/x.tif",
        protocol="abfs",
        crs=CRS.from_epsg(26919),
        transform=Affine(1, 0, 0, 0, -1, 0),
        width=10,
        height=10,
        count=4,
        nodata=None,
        dtypes=("uint8",) * 4,
        descriptions=(None,) * 4,
        storage_options=OPTIONS,
    )


def test_shippable_options_keep_everything_but_the_secrets():
    assert shippable(OPTIONS) == {"connection_timeout": 5}
    assert shippable(None) == {}


def test_a_shipped_scene_plan_carries_no_secret():
    source = _source()
    plan = ScenePlan(
        "x_2016",
        source,
        Grid(source.crs, source.transform, 10, 10),
        5,
        source,
        np.zeros(256, np.uint8),
        ("A",),
    )
    assert KEY.encode() in pickle.dumps(plan)  # what a task would carry without the stripping
    shipped = pickle.dumps(plan.shippable())
    assert KEY.encode() not in shipped and b"connection_timeout" in shipped


def test_the_partitioned_dataset_ships_no_secret(tmp_path, monkeypatch):
    captured = {}

    class Context:
        defaultParallelism = 2

        def parallelize(self, items, tasks):
            from pyspark import cloudpickle

            captured["payload"] = cloudpickle.dumps(items)
            return self

        def mapPartitions(self, function):
            from pyspark import cloudpickle

            captured["task"] = cloudpickle.dumps(function)  # what Spark would ship with each task
            return self

        def collect(self):
            return [1]

    class Session:
        sparkContext = Context()

    monkeypatch.setattr("landuse_kedro.datasets.spark_partitioned.running_session", Session)
    dataset = SparkPartitionedDataset(
        path=str(tmp_path / "tiles"),
        dataset="pillow.ImageDataset",
        credentials={"account_key": KEY, "connection_timeout": 5},
    )
    assert KEY in repr(dataset._dataset_config)  # the dataset itself holds the secret
    dataset.save({"a": "a tile (never computed here)"})
    assert captured["task"] and KEY.encode() not in captured["task"] + captured["payload"]


def test_error_strings_lose_the_environment_secrets(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONNECTION)
    text = f"HttpResponseError: signature of AccountKey={KEY} did not match for {CONNECTION}"
    redacted = redact_environment_secrets(text)
    assert KEY not in redacted and "***" in redacted and "HttpResponseError" in redacted


def test_git_ignores_every_place_a_secret_may_go() -> None:
    """conf/local (credentials, tokens in parameters, anything) and .env files are never committed;
    the folder's placeholder is (issue 28)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def ignored(path: str) -> bool:
        return (
            subprocess.run(
                ["git", "check-ignore", "--no-index", "-q", path], cwd=root, check=False
            ).returncode
            == 0
        )

    for path in (
        "conf/local/credentials.yml",
        "conf/local/parameters.yml",
        "conf/local/x/tokens.yml",
        ".env",
        ".env.prod",
    ):
        assert ignored(path), path
    assert not ignored("conf/local/.gitkeep") and not ignored("conf/base/credentials.yml")
