"""landuse-kedro"""

from landuse_kedro import quiet_tensorflow

quiet_tensorflow.install()  # every process that imports the project: CLI, notebooks, Spark workers

__version__ = "0.1"
