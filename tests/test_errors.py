"""The error tree: third-party exceptions are mapped onto it where they enter our code."""

from __future__ import annotations

import av
import botocore.exceptions
import httpx
import pytest

from schemas.errors import (EncodeError, FetchFailed, InternalError, NoFaceFound, OutOfMemory, StorageError,
                            catalog, from_exception)


def test_library_failures_become_codes_with_their_retry_rule():
    cases = [
        (httpx.ConnectError("refused"), FetchFailed),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StorageError),
        (av.error.InvalidDataError(1094995529, "Invalid data"), EncodeError),
        (MemoryError(), OutOfMemory),
        (KeyError("surprise"), InternalError),
    ]
    for raised, expected in cases:
        mapped = from_exception(raised)
        assert type(mapped) is expected, (raised, mapped)
        assert mapped.retryable and type(raised).__name__ in mapped.message


def test_cuda_out_of_memory_is_retryable_out_of_memory():
    torch = pytest.importorskip("torch")
    mapped = from_exception(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert mapped.code == "out_of_memory" and mapped.retryable and mapped.http_status == 503


def test_our_own_errors_pass_through_and_messages_are_bounded():
    ours = NoFaceFound("No face was found in the portrait.")
    assert from_exception(ours) is ours
    assert len(from_exception(RuntimeError("x" * 100_000)).message) <= 2000


def test_every_code_once_with_an_http_status_and_a_meaning():
    rows = catalog()
    assert len({r["code"] for r in rows}) == len(rows)
    assert all(400 <= r["httpStatus"] < 600 and r["meaning"] for r in rows)
