"""Checks for environments whose data lives in Azure storage (``abfs://`` / ``abfss://``).

A run on a cluster should stop in seconds, naming the missing variable, the environment, the
endpoint or the container, before Spark starts or any node runs; and no message may carry a
secret. Dataset-level errors come too late (after minutes of work) and the Azure SDK's default
retries make an unreachable endpoint hang for minutes, so the check uses its own bounded client.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from kedro.io.core import get_protocol_and_path

AZURE_PROTOCOLS = frozenset({"abfs", "abfss", "az"})
# adlfs keyword arguments whose values are secrets, or contain one.
SECRET_KEYS = ("connection_string", "account_key", "sas_token", "client_secret", "credential")
CHECK_TIMEOUT_S = 5


class StorageConfigError(RuntimeError):
    """Storage configuration or access problem; its message never holds a secret."""


def env_required(name: str) -> str:
    """OmegaConf resolver ``${env_required:VAR}``: the variable's value, or an error naming it.

    ``oc.env`` without a default fails too, but its message does not say what to do; the
    environment's name is added by the hook that loads the credentials.
    """
    value = os.environ.get(name)
    if not value:
        raise StorageConfigError(f"environment variable {name} is not set (or empty)")
    return value


def is_remote(data_root: str) -> bool:
    return get_protocol_and_path(str(data_root))[0] in AZURE_PROTOCOLS


def redact(text: str, credentials: Mapping[str, Any]) -> str:
    """``text`` with every secret value (and each part of a connection string) replaced."""
    secrets: list[str] = []
    for key in SECRET_KEYS:
        value = credentials.get(key)
        if isinstance(value, str) and value:
            secrets.append(value)
            secrets.extend(
                part.split("=", 1)[1]
                for part in value.split(";")
                if part.lower().startswith(("accountkey=", "sharedaccesssignature=")) and "=" in part
            )
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/\s@?#]*@)?(?P<place>[^\s?#'\"<>]*)[^\s'\"<>]*"
)


def public_url(url: str) -> str:
    """``url`` without its user info, query and fragment: where a signed URL or an API key puts its
    secret (a SAS token's ``se=``/``sig=``, ``?token=``, ``user:password@``)."""
    return scrub_urls(url)


_SIGNED_QUERY = re.compile(
    r"\?(?=[^\s'\"<>]*\b(?:sig|se|sv|sp|skoid|token|access_token|signature|x-amz-signature|key|code)=)"
    r"[^\s'\"<>]*",
    re.IGNORECASE,
)


def scrub_urls(text: str) -> str:
    """``text`` with every URL in it made public (:func:`public_url`), and any query string that
    carries a signature or token dropped even where no scheme precedes it (GDAL quotes a file's
    name, ``quad.tif?se=...&sig=...``): for any message before it is raised, logged or stored."""
    text = _URL.sub(lambda match: match["scheme"] + match["place"], text)
    return _SIGNED_QUERY.sub("", text)


# Where Spark executors find credentials: adlfs reads AZURE_STORAGE_*, azure-identity AZURE_CLIENT_*.
SECRET_ENV = {
    "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
    "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
    "sas_token": "AZURE_STORAGE_SAS_TOKEN",
    "client_secret": "AZURE_STORAGE_CLIENT_SECRET",
    "credential": "AZURE_CLIENT_SECRET",
}


UNREACHABLE_ERRORS = frozenset(
    {
        "ClientAuthenticationError",
        "ServiceRequestError",
        "ServiceRequestTimeoutError",
        "ServiceResponseError",  # azure-core: the connection broke while the answer came
        "ConnectionError",
        "TimeoutError",
        "ClientConnectionError",  # aiohttp (adlfs, fsspec's HTTP): refused, reset, disconnected
        "ClientPayloadError",  # aiohttp: the body stopped mid-transfer
        "IncompleteRead",
    }
)
"""Errors that say the storage is unreachable or refuses us, not that one file is bad."""
OUTAGE_STATUS = frozenset({401, 403, 429, 500, 502, 503, 504})
"""HTTP answers that refuse every request alike (credentials, throttling, a service down)."""
OUTAGE_TEXT = re.compile(
    r"CURL error|Could not resolve host|Couldn't connect to server|Failed to connect to|"
    r"Connection (?:refused|reset|timed out)|Operation timed out|Timeout was reached|"
    r"HTTP (?:response )?code:? (?:401|403|429|50[0234])\b",
    re.IGNORECASE,
)
"""How GDAL's own network reads (``/vsicurl/``, ``/vsiaz/``) report curl's and HTTP's errors: as text."""
_NOTED = threading.local()


def note_read_failure(error: BaseException) -> None:
    """Keep ``error``, raised by a file object that GDAL reads through (rasterio's Python opener):
    GDAL reports it only as "Read failed", so :func:`unreachable_cause` looks here too."""
    _NOTED.error = error


def unreachable_cause(error: BaseException) -> BaseException | None:
    """The error that says the storage is unreachable or refuses us (not that one file or window
    is bad), or None: ``error`` or one under it (``__cause__``, ``__context__``) of a type in
    ``UNREACHABLE_ERRORS``, an HTTP error with an ``OUTAGE_STATUS``, a GDAL message matching
    ``OUTAGE_TEXT``; under a rasterio error also the storage error noted in this thread while GDAL
    read (:func:`note_read_failure`), which this consumes. Such a run must stop at once instead of
    recording the same failure for every file or tile."""
    noted, _NOTED.error = getattr(_NOTED, "error", None), None
    chain = list(_chain(error))
    if noted is not None and any(_is_gdal_error(item) for item in chain):
        chain.extend(_chain(noted))
    return next((item for item in chain if _says_unreachable(item)), None)


def is_unreachable(error: BaseException) -> bool:
    """Whether :func:`unreachable_cause` finds a cause in ``error``."""
    return unreachable_cause(error) is not None


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _is_gdal_error(error: BaseException) -> bool:
    return any(
        kind.__name__ == "RasterioError" or kind.__name__.startswith("CPLE_") for kind in type(error).__mro__
    )


def _says_unreachable(error: BaseException) -> bool:
    if UNREACHABLE_ERRORS & {kind.__name__ for kind in type(error).__mro__}:
        return True
    response = getattr(error, "response", None)
    status = getattr(error, "status_code", None) or getattr(error, "status", None)
    status = status or getattr(response, "status_code", None) or getattr(response, "status", None)
    if isinstance(status, int) and status in OUTAGE_STATUS:
        return True
    return _is_gdal_error(error) and OUTAGE_TEXT.search(str(error)) is not None


def shippable(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options that may travel to Spark executors inside a task: all but the secrets.

    Executors take their credentials from their own environment (the variables of ``SECRET_ENV``,
    which adlfs and azure-identity read, or the cluster's managed identity), so a secret is never
    pickled into a closure that Spark ships, logs or keeps with a failed task.
    """
    return {key: value for key, value in (options or {}).items() if key not in SECRET_KEYS}


def redact_environment_secrets(text: str) -> str:
    """``text`` without the secrets an executor holds in its environment: for error strings that
    are stored (Parquet rows, metrics JSON) or logged."""
    return redact(text, {key: os.environ.get(name) for key, name in SECRET_ENV.items()})


def check_credentials(credentials: Mapping[str, Any], env: str) -> None:
    """One complete way to authenticate must be configured (no network)."""
    creds = credentials or {}
    if creds.get("connection_string"):
        return
    has_account = bool(creds.get("account_name"))
    principal = ("tenant_id", "client_id", "client_secret")
    if has_account and any(creds.get(key) for key in ("account_key", "sas_token", "credential")):
        return
    if has_account and all(creds.get(key) for key in principal):
        return
    if has_account and creds.get("anon") is False:  # managed identity / DefaultAzureCredential
        return
    missing = (
        [key for key in principal if not creds.get(key)] if any(creds.get(key) for key in principal) else []
    )
    hint = f" (service principal incomplete: no {', '.join(missing)})" if missing else ""
    raise StorageConfigError(
        f"Kedro environment '{env}' keeps its data in Azure storage but its `storage` credentials "
        f"hold no complete login{hint}: set a connection string, or account_name with an account "
        f"key, SAS token or service principal (tenant_id, client_id, client_secret), through "
        f"environment variables read by conf/{env}/credentials.yml."
    )


def check_container(
    data_root: str, credentials: Mapping[str, Any], env: str, timeout_s: float = CHECK_TIMEOUT_S
) -> None:
    """Fail fast when the endpoint cannot be reached or the container does not exist."""
    from azure.core.exceptions import AzureError, HttpResponseError

    container = container_of(data_root)
    endpoint = redact(_endpoint(credentials), credentials)
    try:
        exists = container_client(container, credentials, timeout_s).exists()
    except (AzureError, ValueError, OSError) as error:
        reason = redact(f"{type(error).__name__}: {error}".splitlines()[0], credentials)[:300]
        problem = (
            f"Azure storage at {endpoint} refused the `storage` credentials for container '{container}'"
            if isinstance(error, HttpResponseError)
            else f"cannot reach Azure storage at {endpoint} to check container '{container}' "
            f"(timeouts {timeout_s:g} s, one retry)"
        )
        # `from None`: the SDK's own exception may quote request URLs with SAS tokens.
        raise StorageConfigError(f"Kedro environment '{env}': {problem} ({reason}).") from None
    if not exists:
        raise StorageConfigError(
            f"Kedro environment '{env}': container '{container}' does not exist at "
            f"{endpoint} (data_root {data_root}). "
            f"Create it, or fix conf/{env}/globals.yml."
        )


def container_of(data_root: str) -> str:
    """``abfss://container@account.dfs.core.windows.net/x`` or ``abfs://container/x`` -> container."""
    rest = str(data_root).split("://", 1)[1]
    return rest.split("/", 1)[0].split("@", 1)[0]


def _endpoint(credentials: Mapping[str, Any]) -> str:
    connection_string = credentials.get("connection_string")
    if connection_string:
        parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
        if "BlobEndpoint" in parts:
            return parts["BlobEndpoint"]
        account = parts.get("AccountName", "?")
        return (
            f"{parts.get('DefaultEndpointsProtocol', 'https')}://{account}.blob."
            f"{parts.get('EndpointSuffix', 'core.windows.net')}"
        )
    return f"https://{credentials.get('account_name')}.blob.core.windows.net"


def container_client(container: str, credentials: Mapping[str, Any], timeout_s: float):
    """A blob container client with one retry and short timeouts (the SDK's defaults retry
    connection errors with exponential back-off for minutes)."""
    from azure.storage.blob import ContainerClient

    # Storage's ExponentialRetry waits initial_backoff (15 s by default) +- 3 s jitter per retry.
    bounded = {
        "retry_total": 1,
        "initial_backoff": 0.5,
        "increment_base": 1,
        "retry_jitter_range": 0.5,
        "connection_timeout": timeout_s,
        "read_timeout": timeout_s,
    }
    if credentials.get("connection_string"):
        return ContainerClient.from_connection_string(credentials["connection_string"], container, **bounded)
    credential: Any = credentials.get("credential") or credentials.get("account_key")
    url = _endpoint(credentials)
    if credential is None and credentials.get("sas_token"):
        url = f"{url}?{str(credentials['sas_token']).lstrip('?')}"
    elif credential is None and credentials.get("client_secret"):
        from azure.identity import ClientSecretCredential

        credential = ClientSecretCredential(
            credentials["tenant_id"], credentials["client_id"], credentials["client_secret"]
        )
    elif credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContainerClient(url, container, credential=credential, **bounded)
