"""A real S3-protocol server for tests: moto's server mode on a loopback port, with made-up credentials."""

from __future__ import annotations

import contextlib
from typing import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


@contextlib.contextmanager
def moto_s3(bucket: str = "renders") -> Iterator[str]:
    """The server's endpoint URL, with ``bucket`` created and the AWS_* credentials set in this process's
    environment (boto3 and the code under test read them there) until the block ends."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in AWS.items():
                patch.setenv(name, value)
            endpoint = f"http://{host}:{port}"
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
            yield endpoint
    finally:
        server.stop()
