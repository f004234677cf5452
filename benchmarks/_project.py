"""What the benchmark scripts share: the Data Catalog of a Kedro project, opened as `kedro run` would.

Imported by the scripts beside it (`from _project import project_catalog`: a script's own folder is
first on ``sys.path``). Run on its own it does nothing; `make benchmark` skips every `benchmarks/_*.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kedro.io import DataCatalog


@contextmanager
def project_catalog(project: Path, env: str | None) -> Iterator[DataCatalog]:
    """The catalog of ``project`` in ``env`` (None: the project's default), from a KedroSession
    created in the project folder (relative paths in its configuration resolve there); the working
    directory is restored and the session closed on leaving, also when the block raises."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = Path(project).resolve()
    cwd = Path.cwd()
    os.chdir(project)
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=env) as session:
            yield session.load_context().catalog
    finally:
        os.chdir(cwd)
