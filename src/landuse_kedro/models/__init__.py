"""ImageNet backbones that work offline, and the land-use classifier built on them.

Attributes are imported lazily (PEP 562) so that ``landuse_kedro.models.torch_weights`` and the pipeline
registry do not pay for ``import keras`` (3-5 s) until a model is actually built.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "read_torch_state_dict": "torch_weights",
    "TorchWeightsError": "torch_weights",
    "efficientnet_lite0": "efficientnet_lite",
    "imagenet_weights_path": "efficientnet_lite",
    "BACKBONES": "backbones",
    "WEIGHTS": "backbones",
    "build_classifier": "backbones",
    "features_and_head": "backbones",
    "backbone_blocks": "backbones",
    "unfreeze_top": "backbones",
    "num_parameters": "backbones",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
