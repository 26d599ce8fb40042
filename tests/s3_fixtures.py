"""A local S3 for tests: moto's server over real HTTP on 127.0.0.1, shared by every test that needs S3.

Use the fixtures by listing this module in the top-level conftest
(``pytest_plugins = ["tests.s3_fixtures"]``), or by binding them in a test module::

    from tests import s3_fixtures

    moto_server = s3_fixtures.moto_server
    s3_client = s3_fixtures.s3_client
    s3_bucket = s3_fixtures.s3_bucket

- ``moto_server`` (session): the endpoint URL, e.g. ``http://127.0.0.1:50123``.
- ``s3_client`` (session): a boto3 S3 client pointed at it.
- ``s3_bucket`` (function): the name of a fresh, empty bucket, emptied and removed afterwards.

The server runs real S3 request handling (signatures, multipart, SSE headers), so tests exercise the
same botocore code paths as production. Its multipart minimum part size is lowered to
``MOTO_MIN_PART_SIZE`` so multipart uploads can be tested with small data; writers under test must
still be given ``allow_small_parts=True`` to go below S3's real 5 MiB minimum.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

#: The smallest non-last part the test server accepts (S3's real minimum is 5 MiB).
MOTO_MIN_PART_SIZE = 64 * 1024

_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yield its endpoint URL."""
    import moto.s3.models
    from moto.server import ThreadedMotoServer

    # moto reads S3_UPLOAD_PART_MIN_SIZE from the environment when it is first imported, which may
    # already have happened, so the module's copy is the one to change. The server runs in this
    # process, so this is the value it enforces.
    previous_min_part_size = moto.s3.models.S3_UPLOAD_PART_MIN_SIZE
    moto.s3.models.S3_UPLOAD_PART_MIN_SIZE = MOTO_MIN_PART_SIZE
    # Werkzeug logs every request at INFO; test output should show failures, not traffic.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        moto.s3.models.S3_UPLOAD_PART_MIN_SIZE = previous_min_part_size


@pytest.fixture(scope="session")
def s3_client(moto_server: str) -> Any:
    """A boto3 S3 client for the test server, with test credentials (never real ones)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=moto_server,
        # Path-style addressing: bucket names need no DNS on 127.0.0.1.
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
        **_CREDENTIALS,
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket; its objects and pending uploads are removed after the test."""
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    for upload in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3_client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if objects:
            s3_client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    s3_client.delete_bucket(Bucket=bucket)
