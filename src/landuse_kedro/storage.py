"""Checks for environments whose data lives in Azure storage (``abfs://`` / ``abfss://``).

A run on a cluster should stop in seconds, naming the missing variable, the environment, the
endpoint or the container, before Spark starts or any node runs; and no message may carry a
secret. Dataset-level errors come too late (after minutes of work) and the Azure SDK's default
retries make an unreachable endpoint hang for minutes, so the check uses its own bounded client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
        "ConnectionError",
        "TimeoutError",
    }
)
"""Errors that say the storage is unreachable or refuses us, not that one file is bad."""


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or its type's ancestors) is one of ``UNREACHABLE_ERRORS``: such a run
    must stop at once instead of recording the same failure for every file or tile."""
    return bool(UNREACHABLE_ERRORS & {kind.__name__ for kind in type(error).__mro__})


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
        exists = _container_client(container, credentials, timeout_s).exists()
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


def _container_client(container: str, credentials: Mapping[str, Any], timeout_s: float):
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
