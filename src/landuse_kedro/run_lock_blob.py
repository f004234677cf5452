"""The run lock of a data root in Azure storage: :class:`BlobRunLock`, a lease on the blob
``<prefix>/.run.lock`` (:mod:`landuse_kedro.run_lock` tells how it is taken, renewed, taken over
and released).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from landuse_kedro.run_lock_base import BLOB_TIMEOUT_S, LOCK_NAME, LOGGER_NAME, BaseRunLock, describe
from landuse_kedro.storage import StorageConfigError, container_client, container_of, redact

logger = logging.getLogger(LOGGER_NAME)

LEASE_MIN_S, LEASE_MAX_S = 15, 60  # what Azure allows for a lease that expires


def blob_location(data_root: str) -> tuple[str, str]:
    """The container and the lock blob's name of an Azure data root: ``abfss://c@account/x/y`` and
    ``abfs://c/x/y`` -> (``c``, ``x/y/.run.lock``)."""
    rest = str(data_root).split("?", 1)[0].split("://", 1)[1]
    prefix = rest.split("/", 1)[1].strip("/") if "/" in rest else ""
    return container_of(data_root), f"{prefix}/{LOCK_NAME}" if prefix else LOCK_NAME


class BlobRunLock(BaseRunLock):
    """The lease on the lock blob of a data root in Azure storage, held by this process until
    :meth:`release` (see the module docstring)."""

    def __init__(
        self,
        data_root: str,
        pipelines: list[str],
        settings: dict[str, Any],
        credentials: Mapping[str, Any] | None,
    ) -> None:
        super().__init__(pipelines, settings)
        self.data_root = str(data_root).split("?", 1)[0]
        self.container, self.blob_name = blob_location(data_root)
        self._credentials = dict(credentials or {})
        self.lease_s = int(min(LEASE_MAX_S, max(LEASE_MIN_S, float(self.settings["stale_s"]))))
        self.heartbeat_s = max(1.0, min(float(self.settings["heartbeat_s"]), self.lease_s / 3))
        self._blob = None
        self._lease = None
        self._released = threading.Lock()

    @property
    def root(self) -> str:
        return self.data_root

    @property
    def location(self) -> str:
        return f"blob {self.blob_name} in container {self.container}"

    def acquire(self) -> None:
        """Take the lease, creating the blob if it is missing, waiting up to ``wait_s`` for another
        holder; a lease that expired (its run was killed or hung) is taken over with a warning.

        Raises:
            RunLockedError: Another run still holds the lease after ``wait_s``.
            StorageConfigError: The storage could not be reached or refused the request.
        """
        from azure.core.exceptions import AzureError

        try:
            self._take_lease()
        except AzureError as error:
            raise StorageConfigError(
                f"Could not take the run lock ({self.location}) on {self.root}: {self._reason(error)}"
            ) from None  # the SDK's own exception may quote request URLs with SAS tokens
        self._start_heartbeat(self.heartbeat_s)

    def _take_lease(self) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        wait_s = float(self.settings["wait_s"])
        deadline, said, unknown_since = time.monotonic() + wait_s, False, None
        self._blob = blob = container_client(
            self.container, self._credentials, BLOB_TIMEOUT_S
        ).get_blob_client(self.blob_name)
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=self.lease_s)
                break
            except ResourceNotFoundError:  # no lock yet (or released this instant): create it
                try:
                    blob.upload_blob(b"", overwrite=False)
                except HttpResponseError as error:  # 409: created meanwhile; 412: and leased already
                    if error.status_code not in (409, 412):
                        raise
                continue
            except HttpResponseError as error:
                if error.status_code != 409:  # 409: LeaseAlreadyPresent, another run holds it
                    raise
            holder = self._holder()
            if holder is None:  # leased, no record yet: its run is writing it this instant
                unknown_since = unknown_since or time.monotonic()
                if time.monotonic() - unknown_since < 2:
                    time.sleep(0.1)
                    continue
            said = self._wait_a_moment(holder, wait_s, deadline, said)
        self._lease = lease
        previous = self._holder()
        blob.upload_blob(json.dumps(self.record).encode(), overwrite=True, lease=lease)
        if previous is not None and previous.get("token") != self.token:
            logger.warning(
                "Took over the run lock (%s) on %s of %s: its lease of %d s expired without renewal "
                "(the run was killed or hung). Its outputs were left as that run left them; leftovers "
                "of its staged writes are removed as the outputs are written again.",
                self.location,
                self.root,
                describe(previous),
                self.lease_s,
            )

    def _holder(self) -> dict[str, Any] | None:
        """The record in the lock blob; None while it is empty, unreadable or gone."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            record = json.loads(self._blob.download_blob().readall() or b"null")
        except (ResourceNotFoundError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _beat_once(self) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._lease.renew()
        except AzureError as error:  # the next beat tries again, while the lease lasts
            logger.warning(
                "Could not renew the run lock (%s) on %s: %s. If this goes on for %d s another run may "
                "take the lock over.",
                self.location,
                self.root,
                self._reason(error),
                self.lease_s,
            )

    def release(self) -> None:
        """Stop renewing and delete the blob under the lease (a lease lost meanwhile protects the new
        holder's blob: that delete is refused). Warns instead of raising."""
        from azure.core.exceptions import AzureError

        self._stop_heartbeat()
        with self._released:
            lease, self._lease = self._lease, None
            if lease is None:
                return
            try:
                self._blob.delete_blob(lease=lease)
            except AzureError as error:
                with contextlib.suppress(AzureError):
                    lease.release()
                logger.warning(
                    "Could not release the run lock (%s) on %s: %s. Its lease expires within %d s.",
                    self.location,
                    self.root,
                    self._reason(error),
                    self.lease_s,
                )

    def _reason(self, error: BaseException) -> str:
        return redact(f"{type(error).__name__}: {error}".splitlines()[0], self._credentials)[:300]
