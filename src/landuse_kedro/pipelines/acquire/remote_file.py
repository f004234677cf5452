"""How acquire reads an href its trust policy allows: HTTP range requests made here, in Python, and
handed to GDAL as a file object, so GDAL never opens a URL itself.

GDAL's own HTTP client (curl) follows redirects, and a host on the allow list could send it to
``127.0.0.1`` or the cloud's metadata service. Here every redirect is a response like any other: its
target goes through the policy's check before it is requested, and so does the address a host name
resolves to when the policy allows any public host. Timeouts bound each request and failures are
retried with backoff; no error message holds the signed URL.
"""

from __future__ import annotations

import io
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from rasterio.abc import FileContainer

from landuse_kedro.storage import public_url

RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class RemoteReadError(OSError):
    """A request for an href failed; the message names it without its token."""


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests, with a small block cache (GeoTIFF
    headers are read in many small pieces and neighbouring windows share blocks)."""

    def __init__(  # noqa: PLR0913 - the policy's settings, passed one by one
        self,
        url: str,
        check: Callable[[str], None],
        failed: Callable[[Exception], None] = lambda error: None,
        timeout_s: float = 30,
        retries: int = 3,
        retry_delay_s: float = 1,
        block_size: int = 256 * 1024,
        cache_blocks: int = 64,
    ) -> None:
        super().__init__()
        self._url, self._check, self._failed = url, check, failed
        self._timeout, self._retries, self._delay = timeout_s, retries, retry_delay_s
        self._block, self._keep = block_size, cache_blocks
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._session = requests.Session()
        self._position = 0
        self._size = -1
        self._checked: set[str] = set()  # URLs ``check`` passed: each is checked once, not per block
        try:  # learns the size, and fails here if nothing answers
            self._store(0, self._get(0, block_size - 1))
        except (OSError, ValueError) as error:
            failed(error)
            raise

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:  # noqa: ANN001 - any writable buffer
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """GDAL calls it from C, where an exception cannot pass: a failure (an ``OSError``, or the
        ``ValueError`` by which ``check`` refuses a URL) is handed to ``failed``, which raises it once
        GDAL reports the short read, and the read comes back empty."""
        try:
            return self._read(size)
        except (OSError, ValueError) as error:
            self._failed(error)
            return b""

    def _read(self, size: int) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._position + size)
        if end <= self._position:
            return b""
        first, last = self._position // self._block, (end - 1) // self._block
        missing = [index for index in range(first, last + 1) if index not in self._blocks]
        while missing:  # one request per run of consecutive missing blocks
            run = 1
            while run < len(missing) and missing[run] == missing[0] + run:
                run += 1
            start = missing[0] * self._block
            data = self._get(start, min(self._size, (missing[0] + run) * self._block) - 1)
            self._store(missing[0], data)
            missing = missing[run:]
        chunks = [self._blocks[index] for index in range(first, last + 1)]
        for index in range(first, last + 1):
            self._blocks.move_to_end(index)
        joined = b"".join(chunks)
        offset = self._position - first * self._block
        out = joined[offset : offset + end - self._position]
        self._position += len(out)
        return out

    def close(self) -> None:
        self._session.close()
        self._blocks.clear()
        super().close()

    def _store(self, first: int, data: bytes) -> None:
        for index, offset in enumerate(range(0, len(data), self._block)):
            self._blocks[first + index] = data[offset : offset + self._block]
            self._blocks.move_to_end(first + index)
        while len(self._blocks) > max(self._keep, 1):
            self._blocks.popitem(last=False)

    def _get(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` (inclusive), retried with backoff on timeouts, dropped connections
        and the statuses a busy server answers."""
        for attempt in range(self._retries + 1):
            try:
                return self._request(start, end)
            except _Retry as reason:
                if attempt == self._retries:
                    raise RemoteReadError(
                        f"{public_url(self._url)}: {reason} (after {attempt + 1} attempt(s), "
                        "acquire.timeout_s / acquire.retries)"
                    ) from None
                time.sleep(self._delay * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, start: int, end: int) -> bytes:
        url = self._url
        for _ in range(MAX_REDIRECTS + 1):
            if url not in self._checked:
                self._check(url)
                self._checked.add(url)
            try:
                response = self._session.get(
                    url,
                    headers={"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"},
                    timeout=(self._timeout, self._timeout),
                    allow_redirects=False,
                    stream=True,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                raise _Retry(type(error).__name__) from None
            with response:
                if response.is_redirect:
                    # relative targets resolve against the current URL; the loop checks the result
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status_code in RETRIED_STATUS:
                    raise _Retry(f"HTTP {response.status_code}")
                if response.status_code == 200 and start == 0 and self._size < 0:
                    raise RemoteReadError(
                        f"{public_url(self._url)}: the host does not answer byte-range requests "
                        "(HTTP 200 to a Range header); acquire reads windows, never whole files"
                    )
                if response.status_code != 206:
                    raise RemoteReadError(f"{public_url(self._url)}: HTTP {response.status_code}")
                self._learn_size(response.headers.get("Content-Range", ""))
                self._url = url  # later requests go straight to where the redirects led
                return self._body(response, min(end, self._size - 1) - start + 1)
        raise RemoteReadError(f"{public_url(self._url)}: more than {MAX_REDIRECTS} redirects")

    def _learn_size(self, content_range: str) -> None:
        match = _CONTENT_RANGE.match(content_range.strip())
        if not match or match.group(3) == "*":
            raise RemoteReadError(f"{public_url(self._url)}: no usable Content-Range in the answer")
        self._size = int(match.group(3))

    def _body(self, response: requests.Response, expected: int) -> bytes:
        try:
            data = response.raw.read(expected + 1, decode_content=False)
        except (requests.RequestException, OSError) as error:
            raise _Retry(type(error).__name__) from None
        if len(data) != expected:
            raise _Retry(f"{len(data)} bytes where {expected} were asked for")
        return data


class HrefOpener(FileContainer):
    """What rasterio's ``opener=`` needs to serve GDAL one href and nothing else: GDAL's probes for
    sidecar files (``.aux.xml``, ``.msk``) find nothing and make no request."""

    def __init__(self, url: str, **settings: Any) -> None:
        self._url, self._settings = url, settings
        self._size: int | None = None
        self._failure: Exception | None = None  # once the href failed, GDAL's retries do not ask again

    def open(self, path: str, mode: str = "rb", **_: Any) -> RemoteFile:
        if path != self._url or "w" in mode or "+" in mode:
            raise FileNotFoundError("only the href itself is read")
        if self._failure is not None:
            raise self._failure
        try:
            file = RemoteFile(path, **self._settings)
        except (OSError, ValueError) as error:
            self._failure = error
            raise
        self._size = file.size
        return file

    def isfile(self, path: str) -> bool:
        return path == self._url

    def isdir(self, path: str) -> bool:
        return False

    def ls(self, path: str) -> list[str]:
        return []

    def mtime(self, path: str) -> int:
        return 0

    def rm(self, path: str) -> None:
        raise PermissionError("acquire never deletes remote files")

    def size(self, path: str) -> int:
        if self._size is None:
            self.open(path).close()
        return int(self._size)


class _Retry(Exception):  # noqa: N818 - a signal inside this module, never raised out of it
    """A failure worth trying again; its message holds no URL."""


def resolved_public(url: str, internal: Callable[[str], bool]) -> str | None:
    """Why ``url``'s host resolves to an address ``internal`` refuses, or None; a name that does
    not resolve is left to the request, which then fails as unreachable."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    for info in infos:
        address = str(info[4][0])
        if internal(address):
            return f"its host resolves to the internal address {address}"
    return None
