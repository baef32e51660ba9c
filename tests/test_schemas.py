"""Event schemas: examples validate, aliases map, bad requests are refused with a reason naming the field."""

from __future__ import annotations

import json

import pytest

import schemas
from schemas.errors import MalformedJson, UnsupportedEventVersion
from schemas.events import (InvalidEvent, ce_headers, check, check_headers, parse_request, record_job_id, safe_job_id,
                            truncate)


@pytest.mark.parametrize("name", schemas.EVENT_TYPES)
def test_examples_match_their_schema(name):
    check(name, schemas.example(name))


def test_schemas_are_draft_2020_12_and_ship_as_package_data():
    for name in schemas.EVENT_TYPES:
        schema = schemas.load(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == name


def test_alias_names_from_the_seed_rest_api_are_accepted():
    request = parse_request(json.dumps(schemas.example("render.requested.v1", "alias")).encode())
    assert request.avatar_uri == "/data/avatars/ada.png" and request.audio_uri == "file:///data/speech/hello.wav"
    assert request.quality_mode == "auto" and request.size == 512
    del_mode = {k: v for k, v in schemas.example("render.requested.v1", "alias").items() if k != "qualityMode"}
    assert parse_request(json.dumps(del_mode).encode()).quality_mode is None  # the worker's default applies and request.fps == 25


def test_full_example_parses_with_times():
    request = parse_request(json.dumps(schemas.example("render.requested.v1")).encode())
    assert request.deadline.isoformat() == "2026-01-01T12:05:00+00:00"
    assert request.idempotency_key == "order-1234-greeting" and request.priority == 5


@pytest.mark.parametrize("change, reason", [
    ({"qualityMode": "ultra"}, "qualityMode"),
    ({"outputPath": "/tmp/x.mp4"}, "outputPath"),
    ({"outputUri": "s3://elsewhere/x.mp4"}, "outputUri"),
    ({"jobId": "not-a-uuid"}, "jobId"),
    ({"size": 513}, "size"),
    ({"fps": 0}, "fps"),
    ({"deadline": "tomorrow"}, "deadline"),
])
def test_invalid_requests_name_the_problem(change, reason):
    payload = {**schemas.example("render.requested.v1"), **change}
    with pytest.raises(InvalidEvent) as caught:
        parse_request(json.dumps(payload).encode())
    assert caught.value.code == "schema_violation"
    assert reason in caught.value.message


def test_both_uri_and_alias_or_neither_is_refused():
    base = {"jobId": "3f2b8a4e-9c1d-4e7a-b2f6-5d8c0a1e7b93", "audioUri": "file:///a.wav"}
    with pytest.raises(InvalidEvent):
        parse_request(json.dumps(base).encode())
    with pytest.raises(InvalidEvent):
        parse_request(json.dumps({**base, "avatarUri": "file:///a.png", "avatarPath": "/a.png"}).encode())


def test_malformed_json_is_its_own_code():
    with pytest.raises(InvalidEvent) as caught:
        parse_request(b"\xff{nope")
    assert caught.value.code == "malformed_json"


def test_cloudevents_binary_mode_headers():
    headers = dict(ce_headers("render.completed.v1", "job-1", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"))
    assert headers["ce_specversion"] == b"1.0" and headers["ce_type"] == b"avatar.render.completed.v1"
    assert headers["content-type"] == b"application/json" and headers["ce_subject"] == b"job-1"
    assert {"ce_id", "ce_source", "ce_time", "traceparent"} <= set(headers)
    assert ce_headers("render.failed.v1", "x")[1][1] != ce_headers("render.failed.v1", "x")[1][1]  # fresh ce_id


def test_deep_nesting_is_malformed_json_not_a_crash():
    """Issue 8 bug 3: a 100,000-deep array raised an uncaught RecursionError, retried forever."""
    for value in (b"[" * 100_000 + b"]" * 100_000, b'{"jobId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        with pytest.raises(MalformedJson) as caught:
            parse_request(value)
        assert "too deeply" in caught.value.message


def test_refusals_echo_bounded_ids_and_messages():
    """Issue 8 bug 3: a 900 KB jobId or avatarUri was echoed whole into events over the broker's 1 MB limit."""
    huge_id = "j" * 900_000
    with pytest.raises(InvalidEvent) as caught:
        parse_request(json.dumps({**schemas.example("render.requested.v1"), "jobId": huge_id}).encode())
    assert len(caught.value.message) < 1200 and "more characters" in caught.value.message
    assert caught.value.job_id == safe_job_id(huge_id) and caught.value.job_id.startswith("unreadable-")
    with pytest.raises(InvalidEvent) as caught:
        parse_request(json.dumps({**schemas.example("render.requested.v1"), "avatarUri": "ü" * 450_000}).encode())
    assert len(caught.value.message.encode()) < 3000
    assert safe_job_id(huge_id) == safe_job_id(huge_id) != safe_job_id(huge_id + "x")  # stable, distinct
    assert safe_job_id("not-a-uuid") == "not-a-uuid" and safe_job_id("a b").startswith("unreadable-")
    assert record_job_id(b"{", b"k" * 900_000).startswith("unreadable-")
    assert record_job_id(b"{", None) == record_job_id(b"{", None) != record_job_id(b"[", None)
    assert truncate("abc", 5) == "abc" and truncate("x" * 10, 4) == "xxxx... (6 more characters)"


@pytest.mark.parametrize("headers", [
    None, [], [("traceparent", b"00-x")],
    [("ce_type", b"avatar.render.requested.v1"), ("ce_specversion", b"1.0")],
])
def test_requests_without_or_with_matching_cloudevents_headers_are_accepted(headers):
    check_headers(headers)


@pytest.mark.parametrize("headers, named", [
    ([("ce_type", b"avatar.render.requested.v2"), ("ce_specversion", b"1.0")], "avatar.render.requested.v2"),
    ([("ce_type", b"avatar.render.completed.v1")], "avatar.render.completed.v1"),
    ([("ce_type", b"avatar.render.requested.v1"), ("ce_specversion", b"2.0")], "2.0"),
])
def test_cloudevents_headers_of_another_type_or_version_are_refused(headers, named):
    with pytest.raises(UnsupportedEventVersion) as caught:
        check_headers(headers)
    assert caught.value.code == "unsupported_event_version" and named in caught.value.message
