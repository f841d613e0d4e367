"""How genctr reaches a Kubeflow Pipelines API: the host, the credentials, ``kfp.Client``'s arguments.

:class:`KFPConnection` is the typed form of ``--host``, ``--namespace``, ``--token``,
``--token-file`` and ``--cookies`` (plus the in-pod ServiceAccount token); :func:`connect` builds
the ``kfp.Client``; :func:`talking_to` turns what the client raises for an unreachable or refusing
API into one :class:`KFPConnectionError` line naming the host and what to check; :func:`probe` is
one bounded HTTP request to the health endpoint (``genctr doctor``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from genctr.errors import ConfigError, GenCTRError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KFPConnection:
    """Where the Kubeflow Pipelines API is and how to authenticate to it.

    Credentials, first match wins: ``token`` (a bearer token), ``token_file`` (a file holding
    one, read when connecting), ``cookies`` (e.g. ``authservice_session=...`` behind an auth
    proxy; may accompany a token); with none of those, inside a pod, the projected
    ServiceAccount token of Kubeflow's convention (``$KF_PIPELINES_SA_TOKEN_PATH``, default
    ``/var/run/secrets/kubeflow/pipelines/token``) when that file exists, refreshed by kfp on
    every request. ``namespace`` is the Kubeflow profile namespace of multi-user installs.
    """

    host: str
    namespace: str | None = None
    token: str | None = None
    token_file: str | None = None
    cookies: str | None = None
    sa_token_path: str | None = None  # None = $KF_PIPELINES_SA_TOKEN_PATH, else kfp's default path

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("give the Kubeflow Pipelines host URL (--host), e.g. http://localhost:8080")
        url = urlsplit(self.host)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"--host {self.host!r} is not an http(s) URL; e.g. https://kubeflow.example.com/pipeline "
                              "or http://localhost:8080 (a port-forward of ml-pipeline-ui)")
        if self.token and self.token_file:
            raise ConfigError("give --token or --token-file, not both")

    @property
    def address(self) -> str:
        """``host:port`` of the API (what an unreachable-host message names)."""
        url = urlsplit(self.host)
        return f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"

    def service_account_token_path(self) -> str | None:
        """The projected ServiceAccount token file, if this process has one (inside a pod)."""
        from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH

        path = self.sa_token_path or os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
        return path if Path(path).is_file() else None

    def bearer_token(self) -> str | None:
        if self.token:
            return self.token.strip()
        if not self.token_file:
            return None
        try:
            token = Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {self.token_file}: {exc.strerror or exc}") from None
        if not token:
            raise ConfigError(f"--token-file {self.token_file} is empty")
        return token

    def auth_mode(self) -> str:
        """``token`` | ``cookies`` | ``token+cookies`` | ``service-account`` | ``none`` (for logs and doctor)."""
        if self.token or self.token_file:
            return "token+cookies" if self.cookies else "token"
        if self.cookies:
            return "cookies"
        return "service-account" if self.service_account_token_path() else "none"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``kfp.Client`` for this connection (only those that are set)."""
        kwargs: dict[str, Any] = {"host": self.host.rstrip("/")}
        if self.namespace:
            kwargs["namespace"] = self.namespace
        token = self.bearer_token()
        if token:
            kwargs["existing_token"] = token
        if self.cookies:
            kwargs["cookies"] = self.cookies
        if not token and not self.cookies:
            path = self.service_account_token_path()
            if path:
                from kfp.client import ServiceAccountTokenVolumeCredentials

                kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=path)
        return kwargs

    def headers(self) -> dict[str, str]:
        """The HTTP headers a request to the API carries (for :func:`probe`)."""
        headers = {"Accept": "application/json"}
        token = self.bearer_token()
        if not token and not self.cookies:
            path = self.service_account_token_path()
            token = Path(path).read_text().strip() if path else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.cookies:
            headers["Cookie"] = self.cookies
        return headers


class KFPConnectionError(GenCTRError):
    """The Kubeflow Pipelines API could not be reached, or refused the request: ``problem``; ``fix``."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(f"{problem}; {fix}" if fix else problem)
        self.problem = problem
        self.fix = fix


def as_connection(host: str | KFPConnection, namespace: str | None = None) -> KFPConnection:
    if isinstance(host, KFPConnection):
        return host if namespace is None else dataclasses.replace(host, namespace=namespace)
    return KFPConnection(host=host, namespace=namespace)


def unreachable(conn: KFPConnection, exc: BaseException) -> KFPConnectionError:
    """One line naming the host and what to check, for a request that never got an HTTP answer."""
    text = " ".join(str(e) for e in _chain(exc)).lower()
    if "refused" in text:
        why = "connection refused"
    elif "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
            or "name resolution" in text:
        why = "host name not resolved"
    elif "timed out" in text or "timeout" in text:
        why = "no answer in time"
    elif "ssl" in text or "certificate" in text:
        why = "TLS handshake failed: check http vs https and the server's certificate"
    else:
        why = type(exc).__name__
    return KFPConnectionError(
        f"cannot reach Kubeflow Pipelines at {conn.host} ({conn.address}: {why})",
        "check the host URL (scheme, host, port, and the /pipeline path of a full Kubeflow install), that the API "
        "is up, or port-forward it: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80")


def refused(conn: KFPConnection, action: str, status: int | None, reason: str | None) -> KFPConnectionError:
    """One line for an HTTP error answer of the API."""
    if status in (401, 403):
        return KFPConnectionError(
            f"Kubeflow Pipelines at {conn.host} refused to {action}: HTTP {status} {reason or ''}".rstrip()
            + f" (credentials used: {conn.auth_mode()})",
            "give --token / --token-file (a bearer token), --cookies (the auth proxy's session cookie), or "
            "--namespace (your profile); in a pod mount the pipelines.kubeflow.org ServiceAccount token")
    return KFPConnectionError(f"Kubeflow Pipelines at {conn.host} refused to {action}: HTTP {status} {reason or ''}"
                              .rstrip(), "check --host points at the Pipelines API, and the server's logs")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        reason = getattr(cur, "reason", None)  # urllib3 MaxRetryError / urllib URLError keep the cause here
        cur = reason if isinstance(reason, BaseException) else (cur.__cause__ or cur.__context__)
    return seen


class _DropHealthzRetries(logging.Filter):
    """kfp.Client() logs a traceback per failed health-check try; the error we raise says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to get healthz info")


@contextlib.contextmanager
def talking_to(conn: KFPConnection, action: str) -> Iterator[None]:
    """Turn what the kfp client raises for an unreachable or refusing API into one line."""
    import urllib3
    from kfp_server_api import ApiException

    quiet = _DropHealthzRetries()
    root, pool = logging.getLogger(), logging.getLogger("urllib3.connectionpool")
    level = pool.level
    root.addFilter(quiet)
    pool.setLevel(logging.ERROR)  # urllib3 warns once per retry of a refused connection
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This client only works with", category=FutureWarning)
            yield
    except ApiException as exc:
        if not exc.status:  # kfp_server_api reports TLS failures as status 0
            raise unreachable(conn, exc) from None
        raise refused(conn, action, exc.status, exc.reason) from None
    except TimeoutError as exc:
        if not str(exc).startswith("Failed getting healthz"):
            raise unreachable(conn, exc) from None
        # kfp.Client() gave up on its health check: it retries an HTTP error answer 5 times
        raise KFPConnectionError(f"Kubeflow Pipelines at {conn.host} failed its health check 5 times",
                                 "check the host URL, the credentials (--token, --token-file, --cookies) and "
                                 "--namespace") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise unreachable(conn, exc) from None
    finally:
        root.removeFilter(quiet)
        pool.setLevel(level)


def connect(conn: KFPConnection) -> Any:
    """A ``kfp.Client`` for ``conn`` (call inside :func:`talking_to`: the constructor may talk to the API)."""
    import kfp

    kwargs = conn.client_kwargs()
    log.info("connecting to Kubeflow Pipelines at %s (credentials: %s%s)", conn.host, conn.auth_mode(),
             f", namespace {conn.namespace}" if conn.namespace else "")
    return kfp.Client(**kwargs)


HEALTHZ_PATH = "/apis/v2beta1/healthz"


def probe(conn: KFPConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    """One real HTTP request to the API's health endpoint; its JSON answer, or KFPConnectionError.

    Unlike ``kfp.Client()`` (which retries for half a minute) this answers within ``timeout_s``.
    """
    import json
    import urllib.error
    import urllib.request

    url = conn.host.rstrip("/") + HEALTHZ_PATH
    request = urllib.request.Request(url, headers=conn.headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) checked
            body = response.read(65536)
            kind = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise KFPConnectionError(f"{conn.host} answered HTTP 404 at {HEALTHZ_PATH}",
                                     "is --host the Pipelines API? (a full Kubeflow install serves it under "
                                     "/pipeline)") from None
        raise refused(conn, "answer its health check", exc.code, exc.reason) from None
    except (urllib.error.URLError, OSError) as exc:
        raise unreachable(conn, exc) from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise KFPConnectionError(f"{conn.host} answered {HEALTHZ_PATH} with {kind or 'a non-JSON page'}, not the "
                                 "Pipelines API (a login page?)", "give --cookies or --token") from None
    return answer if isinstance(answer, dict) else {"answer": answer}
