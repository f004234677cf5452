"""An unknown --env is named together with the environments that exist."""

from __future__ import annotations

import pytest
from kedro.config import MissingConfigException

from tests.helpers import load_catalog


def test_an_unknown_environment_lists_the_existing_ones(project_copy):
    with pytest.raises(
        MissingConfigException,
        match=r"Unknown environment 'prod' \(--env\): .* azurite, hdinsight, local, standalone, test\.",
    ):
        load_catalog(project_copy, env="prod")
    assert "tile_manifest" in load_catalog(project_copy, env="local").filter()  # a real one still loads
