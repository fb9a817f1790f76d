"""``http(s)://`` sources: streamed downloads with httpx, bounded retries, clear errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from ferry_runtime.fetch.archive import ByteBudget
from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.retry import RetryPolicy, TransientError, with_retries

log = logging.getLogger(__name__)

AUTHORIZATION_ENV = "FERRY_RUNTIME_FETCH_AUTHORIZATION"
_CHUNK = 1 << 20
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def redact_url(url: str) -> str:
    """The URL without query, fragment or user info: safe to log and to store."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def make_client(authorization: str | None) -> httpx.Client:
    """An httpx client for model downloads: identity encoding, redirects, sane timeouts.

    httpx drops the ``Authorization`` header when a redirect leaves the origin.
    """
    headers = {"Accept-Encoding": "identity", "User-Agent": "ferry-runtime-fetch"}
    if authorization:
        headers["Authorization"] = authorization
    return httpx.Client(
        headers=headers,
        follow_redirects=True,
        timeout=httpx.Timeout(60.0, connect=10.0),
    )


def download(
    client: httpx.Client,
    url: str,
    target: Path,
    *,
    budget: ByteBudget,
    policy: RetryPolicy,
) -> None:
    """Download ``url`` into a new file at ``target``; every attempt starts the file afresh."""
    shown = redact_url(url)
    authorized = "Authorization" in client.headers

    def attempt() -> None:
        written = 0
        try:
            with client.stream("GET", url) as response:
                _check_status(response, shown, authorized, signed="?" in url)
                expected = _content_length(response)
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        budget.add_bytes(len(chunk))
                        written += len(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                if expected is not None and written != expected:
                    raise TransientError(f"got {written} of {expected} bytes")
        except httpx.TransportError as error:
            budget.release_bytes(written)
            raise TransientError(f"{type(error).__name__}: {error}") from error
        except TransientError:
            budget.release_bytes(written)
            raise
        except httpx.HTTPError as error:  # too many redirects, undecodable body, ...
            raise FetchError(f"GET {shown}: {type(error).__name__}: {error}") from error

    log.info("downloading %s", shown)
    try:
        with_retries(attempt, policy, what=f"GET {shown}")
    except TransientError as error:
        raise FetchError(f"GET {shown} failed after {policy.attempts} attempts: {error}") from error
    log.info("downloaded %s (%d bytes)", shown, target.stat().st_size)


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or response.headers.get("Content-Encoding", "identity") != "identity":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _check_status(response: httpx.Response, shown: str, authorized: bool, *, signed: bool) -> None:
    status = response.status_code
    if status == 200:
        return
    reason = f"HTTP {status} {response.reason_phrase}".rstrip()
    if status in _TRANSIENT_STATUS:
        raise TransientError(reason)
    if status in (401, 403):
        hint = (
            f"the Authorization header from {AUTHORIZATION_ENV} was refused"
            if authorized
            else f"set {AUTHORIZATION_ENV} (spec.model.credentialsSecret) to the Authorization "
            "header value the server expects"
        )
        if signed:
            hint += "; a presigned URL may also have expired"
        raise FetchError(f"GET {shown}: {reason}: access denied; {hint}")
    if status == 404:
        raise FetchError(f"GET {shown}: {reason}: no such file on the server")
    raise FetchError(f"GET {shown}: {reason}")
