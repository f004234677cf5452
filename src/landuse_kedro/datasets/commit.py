"""Write beside, then swap: a re-run that fails or is killed never destroys the last good output.

An output is first written whole to a sibling staging path (``<path>.staging-<id>``); only when
that write has succeeded is it renamed into place. The old output is renamed aside first
(``<path>.previous-<id>``) and deleted last. On a local disk each rename is one atomic
``os.rename``, so a reader sees the old output or the new one, never a mix; between the two renames
the path is briefly absent (never half written). On Azure storage adlfs moves a folder blob by
blob (it speaks the Blob API, not ADLS Gen2's atomic directory rename): the staging still protects
the old output from a failed or killed job, but the swap itself takes one copy per file and is
not atomic there. A single GeoTIFF on Azure is one PUT, which is.

A killed run leaves at most a staging folder or a previous copy: the next write removes the staging
leftovers and, when the output itself is missing, puts the previous copy back, and logs it.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import PurePosixPath

import fsspec
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

STAGING, PREVIOUS = ".staging-", ".previous-"


def staging_path(path: str) -> str:
    return f"{path}{STAGING}{uuid.uuid4().hex[:12]}"


def clean_leftovers(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Remove what an interrupted write left beside ``path``; restore a previous copy if the
    output itself was lost between the two renames of a swap."""
    parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    if not fs.exists(parent):
        return
    for entry in sorted(fs.ls(parent, detail=False)):
        base = PurePosixPath(entry.rstrip("/")).name
        if base.startswith(name + STAGING):
            fs.rm(entry, recursive=True)
            logger.warning("Removed %s, left by an interrupted run (it never became the output)", entry)
        elif base.startswith(name + PREVIOUS):
            if fs.exists(path):
                fs.rm(entry, recursive=True)
                logger.warning("Removed %s, the replaced output an interrupted swap left behind", entry)
            else:
                _move(fs, entry, path)
                logger.warning(
                    "Restored %s from %s: a swap was interrupted before the new output arrived", path, entry
                )


def swap_in(fs: fsspec.AbstractFileSystem, staged: str, path: str) -> None:
    """Make the fully written ``staged`` output the current ``path``."""
    fs.invalidate_cache()  # Spark tasks wrote ``staged``: listings cached before know nothing of it
    previous = None
    if fs.exists(path):
        previous = f"{path}{PREVIOUS}{uuid.uuid4().hex[:12]}"
        _move(fs, path, previous)
    _move(fs, staged, path)
    if previous is not None:
        fs.rm(previous, recursive=True)
    fs.invalidate_cache(str(PurePosixPath(path).parent))


def _move(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """A rename where the filesystem has one (local disk: a single ``os.rename``); on object
    stores, whose folders are only name prefixes, each file is moved (copied, then deleted)."""
    if isinstance(fs, LocalFileSystem) or fs.isfile(source):
        fs.mv(source, target)
        return
    for name in fs.find(source):
        fs.mv(name, target + name[len(source.rstrip("/")) :])
