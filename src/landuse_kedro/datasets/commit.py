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
leftovers and, when the output itself is missing, puts the previous copy back, and logs it. Only
leftovers whose owner is provably gone are touched: each name carries its writer's process and host
(``<path>.staging-<pid>@<host>-<id>``), and a leftover is removed only when that process no longer runs
on this host. A live run's staging (a second run writing the same output) is left alone, and so is
one from another host or without an owner in its name (an older version's): those are listed.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from pathlib import PurePosixPath

import fsspec
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

STAGING, PREVIOUS = ".staging-", ".previous-"


HOST = socket.gethostname()
OWNED = re.compile(r"(\d+)@(.+)-[0-9a-f]{8}")  # <pid>@<host>-<id>, after STAGING or PREVIOUS


def _owned(path: str, kind: str) -> str:
    return f"{path}{kind}{os.getpid()}@{HOST}-{uuid.uuid4().hex[:8]}"


def staging_path(path: str) -> str:
    return _owned(path, STAGING)


def owner_gone(suffix: str) -> bool | None:
    """Whether the writer named in a leftover's ``suffix`` (``<pid>@<host>-<id>``) is gone: True when
    its process no longer runs on this host, False while it runs, None when that cannot be proven
    (another host, or no owner in the name)."""
    match = OWNED.fullmatch(suffix)
    if match is None or match.group(2) != HOST:
        return None
    if int(match.group(1)) == os.getpid():  # an earlier failed save of this process: one save at a time
        return True
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def clean_leftovers(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Remove what an interrupted write left beside ``path``; restore a previous copy if the
    output itself was lost between the two renames of a swap. Only leftovers of a writer that is
    provably gone are touched (see the module docstring); the others are listed."""
    parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    if not fs.exists(parent):
        return
    for entry in sorted(fs.ls(parent, detail=False)):
        base = PurePosixPath(entry.rstrip("/")).name
        kind = next((k for k in (STAGING, PREVIOUS) if base.startswith(name + k)), None)
        if kind is None:
            continue
        gone = owner_gone(base[len(name + kind) :])
        if not gone:
            logger.warning(
                "Left %s alone: %s. Remove it by hand once no run writes here.",
                entry,
                "its run is still writing (another run on the same output)"
                if gone is False
                else "its writer cannot be proven gone (another host, or an older version's name)",
            )
        elif kind == STAGING:
            fs.rm(entry, recursive=True)
            logger.warning("Removed %s, left by an interrupted run (it never became the output)", entry)
        elif fs.exists(path):
            fs.rm(entry, recursive=True)
            logger.warning("Removed %s, the replaced output an interrupted swap left behind", entry)
        else:
            _move(fs, entry, path)
            logger.warning(
                "Restored %s from %s: a swap was interrupted before the new output arrived", path, entry
            )


def find_leftovers(root: str) -> list[tuple[str, bool | None]]:
    """Every staging or previous copy under a local ``root``, with whether its writer is gone (see
    :func:`owner_gone`): what killed runs left, for the next run to list. Leftovers are not entered."""
    found, folders = [], [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                kind = next((k for k in (STAGING, PREVIOUS) if k in entry.name), None)
                if kind is not None:
                    found.append((entry.path, owner_gone(entry.name.rsplit(kind, 1)[1])))
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
    return sorted(found)


def swap_in(fs: fsspec.AbstractFileSystem, staged: str, path: str) -> None:
    """Make the fully written ``staged`` output the current ``path``."""
    fs.invalidate_cache()  # Spark tasks wrote ``staged``: listings cached before know nothing of it
    previous = None
    if fs.exists(path):
        previous = _owned(path, PREVIOUS)
        _move(fs, path, previous)
    _move(fs, staged, path)
    if previous is not None:
        fs.rm(previous, recursive=True)
    fs.invalidate_cache(str(PurePosixPath(path).parent))


def _move(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """A rename where the filesystem has one (local disk: a single ``os.rename``); on object
    stores, whose folders are only name prefixes, each file is moved (copied, then deleted).
    Refuses an existing ``target``: fsspec would move ``source`` inside it (a table nested in a table)."""
    if fs.exists(target):
        raise FileExistsError(
            f"Not moving {source} to {target}: {target} exists (another run wrote it meanwhile?), and the "
            f"move would land inside it. {source} is kept."
        )
    if isinstance(fs, LocalFileSystem) or fs.isfile(source):
        fs.mv(source, target)
        return
    for name in fs.find(source):
        fs.mv(name, target + name[len(source.rstrip("/")) :])
