"""A name seen in a log or in kedro-viz leads straight to the code: every node is named after its function."""

from tests.helpers import registered_pipelines


def test_every_node_is_named_after_its_function():
    nodes = [
        node
        for name, pipeline in registered_pipelines().items()
        if name != "__default__"
        for node in pipeline.nodes
    ]
    assert len(nodes) > 20, "the registry was not read"
    assert [node.name for node in nodes if node.name != node.func.__name__] == []
