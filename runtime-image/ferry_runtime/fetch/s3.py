"""``s3://`` sources with boto3: credentials, region and endpoint from the environment.

boto3's default chain supplies credentials (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
/ ``AWS_SESSION_TOKEN`` from ``spec.model.credentialsSecret``, or a web identity / instance
role). ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` selects an S3-compatible store, which is
then addressed path-style. Transient failures are retried by botocore's standard retry mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ferry_runtime.fetch.archive import ByteBudget, safe_member_path
from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.retry import RetryPolicy

log = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED = frozenset(
    {
        "403",
        "AccessDenied",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
    }
)
_CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) from "
    "spec.model.credentialsSecret"
)


def endpoint_from_env() -> str | None:
    """The S3-compatible endpoint the environment names, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(policy: RetryPolicy) -> Any:
    """A boto3 S3 client configured from the environment."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_from_env()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    config = Config(
        retries={"max_attempts": policy.attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, config=config
    )


def download_object(
    client: Any, bucket: str, key: str, target: Path, *, budget: ByteBudget
) -> None:
    """Download one object into a new file at ``target``."""
    where = f"s3://{bucket}/{key}"
    with _mapped_errors(where):
        head = client.head_object(Bucket=bucket, Key=key)
        size = int(head.get("ContentLength", 0))
        _download(client, bucket, key, target, size=size, budget=budget)


def download_prefix(
    client: Any, bucket: str, prefix: str, target: Path, *, budget: ByteBudget
) -> None:
    """Download every object under ``prefix`` into ``target``, keeping relative paths."""
    where = f"s3://{bucket}/{prefix}"
    with _mapped_errors(where):
        found = 0
        for key, size in _list(client, bucket, prefix):
            relative = key[len(prefix) :]
            if not relative or relative.endswith("/"):
                continue  # "folder" placeholder objects
            rel = safe_member_path(relative)
            file_path = target.joinpath(*rel.parts)
            file_path.parent.mkdir(parents=True, exist_ok=True)
            budget.add_entry()
            _download(client, bucket, key, file_path, size=size, budget=budget)
            found += 1
    if not found:
        raise FetchError(f"{where}: no objects under this prefix")


def _list(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield str(item["Key"]), int(item.get("Size", 0))


def _download(
    client: Any, bucket: str, key: str, target: Path, *, size: int, budget: ByteBudget
) -> None:
    from boto3.s3.transfer import TransferConfig

    budget.add_bytes(size)  # refuse before downloading, not after
    log.info("downloading s3://%s/%s (%d bytes)", bucket, key, size)
    client.download_file(
        bucket, key, str(target), Config=TransferConfig(max_concurrency=4, use_threads=True)
    )
    actual = target.stat().st_size
    if actual != size:
        raise FetchError(f"s3://{bucket}/{key}: got {actual} bytes, the listing said {size}")


@contextmanager
def _mapped_errors(where: str) -> Iterator[None]:
    """Turn boto3 / botocore exceptions into ``FetchError`` with a useful message."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError as error:
        raise FetchError(f"{where}: no S3 credentials found; {_CREDENTIALS_HINT}") from error
    except ClientError as error:
        raise describe_client_error(where, error) from error
    except (BotoCoreError, Boto3Error) as error:
        raise FetchError(f"{where}: {error}") from error


def describe_client_error(where: str, error: Any) -> FetchError:
    """A ``FetchError`` for a botocore ``ClientError``, by its error code."""
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = details.get("Message") or code or "error"
    if code == "NoSuchBucket":
        return FetchError(f"{where}: the bucket does not exist")
    if code in _NOT_FOUND or status == 404:
        return FetchError(f"{where}: not found (HTTP 404)")
    if code in _DENIED or status == 403:
        return FetchError(
            f"{where}: access denied ({code or status}: {message}); {_CREDENTIALS_HINT}"
        )
    return FetchError(f"{where}: {code or status}: {message}")
