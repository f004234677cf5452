"""TensorFlow's start-up lines on stderr, silenced for this project's processes.

Importing TensorFlow 2.21 writes INFO lines ("oneDNN custom operations are on", "Could not find
cuda drivers") before its C++ logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` cannot filter
them, and its first operation logs ``failed call to cuInit ... UNKNOWN ERROR (303)`` at ERROR
level on every machine without a GPU. Both look like failures and are not. The import and the
CUDA probe run with file descriptor 2 pointed at /dev/null; Python exceptions still propagate, and
TensorFlow's later errors still show.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Silence the process's stderr, C libraries included (they write to the descriptor)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, with ``exec_module`` silenced; everything else is delegated
    (``importlib.resources``, ``lazy_loader`` and friends ask loaders for more than that)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with stderr_silenced():
            self._loader.exec_module(module)
            module.config.list_physical_devices("GPU")  # the CUDA probe (cuInit) happens here, once


class QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual and wraps its loader in :class:`_QuietLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Idempotent: one finder, first on ``sys.meta_path``."""
    if not any(isinstance(finder, QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowFinder())
