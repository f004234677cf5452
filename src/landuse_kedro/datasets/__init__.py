"""Project datasets, only for what kedro-datasets does not cover: GeoTIFF rasters, model files
whose format (ONNX or Keras) is decided by configuration, listing image files for Spark, the sizes
and checksums of a folder's files (for the STAC catalog), saving a partitioned folder from Spark
workers, Spark tables swapped in only once written, Spark tables that only grow (the training
features), reading such a table on the driver with Arrow, and folders that may hold nothing yet."""

from landuse_kedro.datasets.appended_spark import AppendedSparkDataset
from landuse_kedro.datasets.arrow_table import ArrowTableDataset
from landuse_kedro.datasets.file_digests import FileDigestsDataset
from landuse_kedro.datasets.file_index import FileIndex, FileIndexDataset
from landuse_kedro.datasets.geotiff import GeoTiffDataset, RasterSource
from landuse_kedro.datasets.model_file import ModelArtifact, ModelFileDataset
from landuse_kedro.datasets.optional_partitioned import OptionalPartitionedDataset
from landuse_kedro.datasets.spark_partitioned import SparkPartitionedDataset
from landuse_kedro.datasets.staged_spark import StagedSparkDataset

__all__ = [
    "AppendedSparkDataset",
    "ArrowTableDataset",
    "FileDigestsDataset",
    "FileIndex",
    "FileIndexDataset",
    "GeoTiffDataset",
    "ModelArtifact",
    "ModelFileDataset",
    "OptionalPartitionedDataset",
    "RasterSource",
    "SparkPartitionedDataset",
    "StagedSparkDataset",
]
