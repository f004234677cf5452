"""A partitioned folder that may hold nothing yet: inputs a user adds when they have them.

kedro-datasets' ``PartitionedDataset`` refuses to load a folder without partitions. The reference
labels of the area estimates (``01_raw/reference``) are written by an analyst after a first run, and
the sample scene's truth exists only with the sample scene, so a run must be able to ask "which are
there?" and hear "none".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.partitions import PartitionedDataset


class OptionalPartitionedDataset(PartitionedDataset):
    """``OptionalPartitionedDataset`` is a ``partitions.PartitionedDataset`` that loads a missing or
    empty folder as no partitions (``{}``) instead of raising; everything else is the same.

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_development_inference.yml``):

        ```yaml
        reference_labels:  # the analysts' labelled samples, <region>.csv; none yet is fine
          type: landuse_kedro.datasets.OptionalPartitionedDataset
          path: ${globals:data_root}/01_raw/reference
          filename_suffix: .csv
          dataset: pandas.CSVDataset
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> from landuse_kedro.datasets import OptionalPartitionedDataset
        >>>
        >>> labels = OptionalPartitionedDataset(
        ...     path=str(tmp_path / "reference"), dataset="pandas.CSVDataset", filename_suffix=".csv"
        ... )
        >>> labels.load()
        {}
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        """The partitions, or ``{}`` when the folder has none (a missing folder included).

        Raises:
            DatasetError: Listing or loading failed for another reason.
        """
        try:
            return super().load()
        except DatasetError:
            if self._list_partitions():
                raise
            return {}
