"""Project datasets, only for what kedro-datasets does not cover: GeoTIFF rasters, model files
whose format (ONNX or Keras) is decided by configuration, listing image files for Spark, and
saving a partitioned folder from Spark workers."""

from landuse_kedro.datasets.file_index import FileIndex, FileIndexDataset
from landuse_kedro.datasets.geotiff import GeoTiffDataset, RasterSource
from landuse_kedro.datasets.model_file import ModelArtifact, ModelFileDataset
from landuse_kedro.datasets.spark_partitioned import SparkPartitionedDataset

__all__ = [
    "FileIndex",
    "FileIndexDataset",
    "GeoTiffDataset",
    "ModelArtifact",
    "ModelFileDataset",
    "RasterSource",
    "SparkPartitionedDataset",
]
