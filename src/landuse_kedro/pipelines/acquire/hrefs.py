"""The trust policy of acquire: every href a STAC API hands out, and every request made for it,
goes through :class:`HrefPolicy` here, because the API and its asset hosts are untrusted.

An href is read only if it is ``http(s)`` (``http`` only where configured) on an allowed host,
never a local path, ``file:``, a GDAL ``/vsi*`` path or another scheme rasterio would map onto
one (``az://`` reads with the user's Azure credentials from the environment). It is opened with
the GTiff driver only (a VRT, which can point at local files, is refused as "not a GeoTIFF"),
with raw VRT bands disabled, no ``.netrc``, and timeouts and bounded retries on every request.
Any error raised while reading it is raised again with the href without its token and without
the chained error that holds the signed one.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import rasterio

from landuse_kedro.parameters import as_list
from landuse_kedro.pipelines.acquire.remote_file import HrefOpener, resolved_public
from landuse_kedro.storage import public_url, scrub_urls

SCHEMES = frozenset({"http", "https"})  # the only ones configuration may allow


class HrefRefused(ValueError):
    """An href the trust policy does not read; the message holds no token."""


class ReadFailed(ConnectionError):
    """Reading an allowed href failed; the message holds no token and there is no chained cause."""


@dataclass(frozen=True)
class HrefPolicy:
    """Which hrefs acquire reads and how (``params:acquire``: ``trust``, ``timeout_s``, ``retries``,
    ``retry_delay_s``; see :meth:`from_params`)."""

    schemes: frozenset[str] = frozenset({"https"})
    hosts: frozenset[str] | None = None  # None: any public host; "*.example.org" matches subdomains
    timeout_s: float = 30
    retries: int = 3
    retry_delay_s: float = 1
    # the last failure of each href's requests (GDAL sees only a short read): raised by reading()
    _failures: dict[str, Exception] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_params(cls, acquire: Mapping[str, Any]) -> HrefPolicy:
        """``acquire.trust.schemes`` (default ``[https]``) and ``acquire.trust.hosts`` (null: any
        public host); the STAC API's host and the hosts of NLCD hrefs named in configuration are
        allowed with them, since configuration names them."""
        trust = acquire.get("trust") or {}
        schemes = frozenset(str(s).lower() for s in as_list(trust.get("schemes") or ["https"]))
        if not schemes <= SCHEMES:
            raise ValueError(
                f"acquire.trust.schemes may list only http and https, got {sorted(schemes)}: acquire "
                "never reads local files or GDAL's /vsi* paths from a STAC API."
            )
        hosts = trust.get("hosts")
        if hosts is not None:
            named = [acquire.get("stac_url")] + [
                edition.get("href")
                for edition in ((acquire.get("nlcd") or {}).get("editions") or {}).values()
                if isinstance(edition, Mapping)
            ]
            hosts = frozenset([str(h).lower() for h in as_list(hosts)] + [_host(url) for url in named if url])
        return cls(
            schemes=schemes,
            hosts=hosts,
            timeout_s=float(acquire.get("timeout_s", 30)),
            retries=int(acquire.get("retries", 3)),
            retry_delay_s=float(acquire.get("retry_delay_s", 1)),
        )

    def check(self, href: str, what: str) -> None:
        """Raise :class:`HrefRefused`, naming ``what`` and the token-free href, unless the policy
        allows ``href``."""
        reason = self._refusal(str(href))
        if reason:
            raise HrefRefused(
                f"{what}: refused href {public_url(str(href))!r}: {reason}. acquire reads only "
                f"{'/'.join(sorted(self.schemes))} hrefs on the hosts of acquire.trust.hosts "
                "(README, acquire)."
            )

    def _refusal(self, href: str) -> str | None:  # noqa: PLR0911 - one return per rule
        if href.lower().startswith("/vsi"):
            return "a GDAL virtual file system path"
        parts = urlsplit(href)
        scheme = parts.scheme.lower()
        if not scheme or len(scheme) == 1:  # a local path (or a Windows drive letter)
            return "a local path"
        if scheme not in self.schemes:
            return f"scheme {scheme!r} is not allowed"
        try:
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            return "its port is malformed"
        if not host:
            return "it names no host"
        if "/vsi" in parts.path.lower():
            return "it nests a GDAL virtual file system path"
        if self.hosts is None:
            return (
                "an internal address (list it in acquire.trust.hosts to allow it)"
                if _internal(host)
                else None
            )
        if not any(_matches(entry, host, port) for entry in self.hosts):
            return f"host {host!r} is not in acquire.trust.hosts"
        return None

    def gdal_options(self) -> dict[str, str]:
        """GDAL's configuration for every read of an href."""
        return {
            **GDAL_HTTP_OPTIONS,
            "GDAL_HTTP_TIMEOUT": str(max(1, round(self.timeout_s))),
            "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(self.timeout_s))),
            "GDAL_HTTP_MAX_RETRY": str(self.retries),
            "GDAL_HTTP_RETRY_DELAY": str(self.retry_delay_s),
        }

    @contextmanager
    def env(self) -> Iterator[None]:
        """GDAL configured by :meth:`gdal_options`; GDAL's own messages, which rasterio logs, quote
        signed hrefs, so they are logged token-free meanwhile."""
        loggers = [logging.getLogger(name) for name in GDAL_LOGGERS]
        for logger in loggers:
            logger.addFilter(_scrub_record)
        try:
            with rasterio.Env(**self.gdal_options()):
                yield
        finally:
            for logger in loggers:
                logger.removeFilter(_scrub_record)

    @contextmanager
    def open(self, href: str, signer: Callable[[str], str], what: str) -> Iterator[Any]:
        """The href, checked, signed and opened as a GeoTIFF (call inside :meth:`env`); errors
        raised while it is open come out of :meth:`reading`. Block reads made outside this
        ``with`` (a dataset kept open in an ``ExitStack``) need their own :meth:`reading`."""
        self.check(href, what)
        with self.reading(href, what):
            signed = signer(href)
            self.check(signed, what)  # a signer must not move the href elsewhere
            opener = HrefOpener(
                signed,
                check=lambda url: self.check_request(url, what),
                failed=lambda error: self._record_failure(href, error),
                timeout_s=self.timeout_s,
                retries=self.retries,
                retry_delay_s=self.retry_delay_s,
            )
            try:  # GDAL reads through Python (remote_file): its own HTTP client follows redirects
                dataset = rasterio.open(signed, driver="GTiff", opener=opener)
            except rasterio.errors.RasterioIOError as error:
                if "not recognized as" in str(error):
                    raise HrefRefused(f"{what}: {public_url(href)!r} is not a GeoTIFF.") from None
                raise
        with self.reading(href, what), dataset:
            yield dataset

    @contextmanager
    def reading(self, href: str, what: str) -> Iterator[None]:
        """A failure while reading ``href`` is raised again as a :class:`ReadFailed` (an
        :class:`HrefRefused` as it is) whose message holds no token, with no chained cause (Kedro
        prints the chain, which quotes the signed href). GDAL quotes the file's name with its
        query (``quad.tif?se=...&sig=...``), so any query after the name is cut as well."""
        try:
            yield
        except (HrefRefused, ReadFailed):
            raise
        except (rasterio.errors.RasterioError, OSError) as error:
            failure = self._failures.pop(public_url(href), None)
            if isinstance(failure, HrefRefused):  # a redirect or an address the policy refused
                raise failure from None
            # the request's own failure first, then GDAL's reasons (in the causes): cleaned, in the message
            chain, cause = [str(failure)] if failure else [], error
            while cause is not None and len(chain) < 4:
                chain.append(f"{type(cause).__name__}: {cause}")
                cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
            message = " <- ".join(chain)
            name = PurePosixPath(urlsplit(href).path).name
            if name:
                message = re.sub(re.escape(name) + r"\?[^\s'\"<>]*", name, message)
            message = scrub_urls(message)
            raise ReadFailed(f"Cannot read {what} {public_url(href)}: {message}") from None

    def check_request(self, url: str, what: str) -> None:
        """Each request for an href, redirects included: the policy's check, and where any public
        host is allowed, the address the host resolves to must be public too."""
        self.check(url, what)
        reason = resolved_public(url, _internal) if self.hosts is None else None
        if reason:
            raise HrefRefused(f"{what}: refused href {public_url(url)!r}: {reason}.")

    def _record_failure(self, href: str, error: Exception) -> None:
        self._failures[public_url(href)] = error

    def request_modifier(self, request: Any) -> None:
        """pystac-client calls it before each request (the landing page, every search page, the
        ``next`` links the API hands out): one on a host or scheme not allowed is refused."""
        self.check(request.url, "A STAC API request")

    def redirect_hook(self, response: Any, *_: Any, **__: Any) -> None:
        """requests calls it on every response, before it follows a redirect: the target must pass
        the same check as the request it replaces."""
        if response.is_redirect:
            self.check(urljoin(response.url, response.headers["Location"]), "A STAC API redirect")


# GDAL reads hrefs through remote_file and makes no request of its own; should a path ever hand it a
# URL, these still hold: no directory listing next to each file (no sidecars read), a block cache,
# timeouts and retries, no raw VRT bands (they read local files), no credentials from ~/.netrc, TLS
# always verified.
GDAL_HTTP_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
    "GDAL_HTTP_NETRC": "NO",
    "GDAL_HTTP_UNSAFESSL": "NO",
}


GDAL_LOGGERS = ("rasterio._env", "rasterio._err", "rasterio._io", "rasterio._base", "rasterio.vrt")


def _scrub_record(record: logging.LogRecord) -> bool:
    record.msg, record.args = scrub_urls(record.getMessage()), ()
    return True


def _host(url: str) -> str:
    return (urlsplit(str(url)).hostname or "").lower()


def _matches(entry: str, host: str, port: int | None) -> bool:
    name, _, entry_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
    if entry_port and str(port) != entry_port:
        return False
    return host == name or (name.startswith("*.") and host.endswith(name[1:]))


def _internal(host: str) -> bool:
    """Loopback, private, link-local (the cloud's metadata service) and other non-public addresses."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return False
