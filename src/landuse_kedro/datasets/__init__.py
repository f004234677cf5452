"""Project datasets, only for what kedro-datasets does not cover: GeoTIFF rasters, model files
whose format (ONNX or Keras) is decided by configuration, and listing image files for Spark."""

from landuse_kedro.datasets.file_index import FileIndex, FileIndexDataset
from landuse_kedro.datasets.geotiff import GeoTiffDataset, RasterSource
from landuse_kedro.datasets.model_file import ModelArtifact, ModelFileDataset

__all__ = [
    "FileIndex",
    "FileIndexDataset",
    "GeoTiffDataset",
    "ModelArtifact",
    "ModelFileDataset",
    "RasterSource",
]
