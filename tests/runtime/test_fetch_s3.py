"""ferry-runtime fetch from s3://: a real S3-compatible server (moto's server) on loopback.

The server enforces credentials (moto's IAM authentication, switched on after the fixture
uploaded the objects), so wrong keys are refused by the server, not by a mock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ferry_runtime.digest import file_sha256
from ferry_runtime.fetch import FetchError, RetryPolicy, fetch_model
from fetch_fixtures import assert_not_complete, make_model_dir, tar_gz_bytes

BUCKET = "ferry-models"
FAST_RETRY = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05)
READ_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
    ],
}


@dataclass(frozen=True)
class S3Store:
    endpoint: str
    access_key: str
    secret_key: str
    digest: str
    source: Path


@pytest.fixture(scope="module")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    source = make_model_dir(tmp_path_factory.mktemp("s3-source") / "model")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    admin: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "setup",
        "aws_secret_access_key": "setup",
    }
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **admin)
    s3.create_bucket(Bucket=BUCKET)
    for name in ("model.pt", "model.json"):
        s3.put_object(Bucket=BUCKET, Key=f"resnet/1/{name}", Body=(source / name).read_bytes())
    s3.put_object(Bucket=BUCKET, Key="resnet/1/", Body=b"")  # a console "folder" object
    s3.put_object(Bucket=BUCKET, Key="resnet/1/assets/labels.txt", Body=b"cat\ndog\n")
    s3.put_object(Bucket=BUCKET, Key="resnet/10/model.json", Body=b"{}")  # must not match 1/
    s3.put_object(Bucket=BUCKET, Key="archives/resnet.tar.gz", Body=tar_gz_bytes(source))
    s3.put_object(Bucket=BUCKET, Key="empty/", Body=b"")
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="ferry-reader")
    iam.put_user_policy(
        UserName="ferry-reader", PolicyName="read", PolicyDocument=json.dumps(READ_POLICY)
    )
    key = iam.create_access_key(UserName="ferry-reader")["AccessKey"]
    # From here on the server checks every request's signature and the user's policy.
    previous = httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0").json()
    try:
        yield S3Store(
            endpoint=endpoint,
            access_key=key["AccessKeyId"],
            secret_key=key["SecretAccessKey"],
            digest=file_sha256(source / "model.pt"),
            source=source,
        )
    finally:
        restore = previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=restore.encode())
        server.stop()


@pytest.fixture
def s3_env(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Store:
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_store.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_store.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_store.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_store


def test_prefix_fetches_every_object_under_it(s3_env: S3Store, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    fetch_model(f"s3://{BUCKET}/resnet/1", dest, sha256=s3_env.digest, retry=FAST_RETRY)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [".ferry-complete", "assets/labels.txt", "model.json", "model.pt"]
    assert (dest / "model.pt").read_bytes() == (s3_env.source / "model.pt").read_bytes()
    assert (dest / "assets/labels.txt").read_text() == "cat\ndog\n"
    marker = json.loads((dest / ".ferry-complete").read_text())
    assert marker["sha256"] == s3_env.digest
    assert sorted(marker["entries"]) == ["assets", "model.json", "model.pt"]


def test_archive_object_is_unpacked(s3_env: S3Store, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    uri = f"s3://{BUCKET}/archives/resnet.tar.gz"
    fetch_model(uri, dest, sha256=s3_env.digest, retry=FAST_RETRY)
    assert file_sha256(dest / "model.pt") == s3_env.digest
    assert (dest / "model.json").read_bytes() == (s3_env.source / "model.json").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [".ferry-complete", "model.json", "model.pt"]


@pytest.mark.parametrize("key", ["resnet/1/", "archives/resnet.tar.gz"])
def test_bad_digest_names_both_and_leaves_nothing_complete(
    s3_env: S3Store, tmp_path: Path, key: str
) -> None:
    wrong = "ab" * 32
    dest = tmp_path / "models"
    with pytest.raises(FetchError) as caught:
        fetch_model(f"s3://{BUCKET}/{key}", dest, sha256=wrong, retry=FAST_RETRY)
    assert wrong in str(caught.value)
    assert s3_env.digest in str(caught.value)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "SignatureDoesNotMatch"),
        ({"AWS_ACCESS_KEY_ID": "AKIAFERRYUNKNOWN0000"}, "InvalidAccessKeyId"),
    ],
)
def test_wrong_credentials_are_refused_by_the_server(
    s3_env: S3Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, str],
    code: str,
) -> None:
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    dest = tmp_path / "models"
    with pytest.raises(FetchError, match=rf"access denied \({code}.*AWS_SECRET_ACCESS_KEY"):
        fetch_model(f"s3://{BUCKET}/resnet/1/", dest, retry=FAST_RETRY)
    assert_not_complete(dest)


def test_missing_credentials_are_a_clear_error(
    s3_env: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(FetchError, match="no S3 credentials found"):
        fetch_model(f"s3://{BUCKET}/resnet/1/", tmp_path / "m", retry=FAST_RETRY)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (f"s3://{BUCKET}/archives/missing.tar.gz", r"missing\.tar\.gz: not found \(HTTP 404\)"),
        ("s3://ferry-no-such-bucket/resnet/1/", "the bucket does not exist"),
        (f"s3://{BUCKET}/empty/", "no objects under this prefix"),
        (f"s3://{BUCKET}/nothing-here/", "no objects under this prefix"),
    ],
)
def test_missing_objects_are_clear_errors(
    s3_env: S3Store, tmp_path: Path, uri: str, message: str
) -> None:
    with pytest.raises(FetchError, match=message):
        fetch_model(uri, tmp_path / "m", retry=FAST_RETRY)
    assert_not_complete(tmp_path / "m")
