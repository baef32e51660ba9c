"""Events on the wire: schema validation, the seed's alias names, and CloudEvents 1.0 binary-mode headers.

A Kafka record carries the event data as its JSON value and the CloudEvents attributes as `ce_*` headers
(binary content mode of the CloudEvents Kafka binding), so consumers can route on headers without parsing.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

import jsonschema

import schemas
from schemas.errors import InvalidEvent, InvalidParameter, MalformedJson, UnsupportedEventVersion
from schemas.frame_rate import MAX_FPS, MIN_FPS, parse_fps

SPEC_VERSION = "1.0"
CE_SOURCE = f"avatar-renderer/{socket.gethostname()}"
ALIASES = {"avatarPath": "avatarUri", "audioPath": "audioUri"}
REQUESTED_TYPE = "avatar.render.requested.v1"
DELIVERY_KEYS = ("output", "canvas", "loudness", "hls")  # broadcast formats (engines/delivery.py Delivery.from_wire)

# Events we write echo parts of what we read (job ids, error messages quoting the input). A record may be up to
# the broker's limit (~1 MB), so everything echoed is bounded: an event about a record stays a few KB.
MAX_ECHOED_ID = 200  # characters of a job id repeated as is (a UUID is 36)
MAX_MESSAGE = 1000  # characters of an error message
_PRINTABLE_ID = re.compile(r"[\x21-\x7e]+")


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def safe_job_id(value: str) -> str:
    """A job id fit to echo in events, keys and headers: itself when short and printable ASCII, else a short
    stable id derived from its digest (`unreadable-<sha256 prefix>`), so every event about one bad record
    carries the same id."""
    if len(value) <= MAX_ECHOED_ID and _PRINTABLE_ID.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"unreadable-{digest}"


def record_job_id(value: bytes | None, key: bytes | None) -> str:
    """The id of a record that could not be parsed: its key when usable, else one derived from its bytes."""
    if key:
        try:
            return safe_job_id(key.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return f"unreadable-{hashlib.sha256(value or b'').hexdigest()[:32]}"


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = schemas.load(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}


def validator(name: str) -> jsonschema.protocols.Validator:
    if name not in _VALIDATORS:
        _VALIDATORS[name] = _validator(name)
    return _VALIDATORS[name]


def check(name: str, payload: dict) -> None:
    """Raise InvalidEvent(schema_violation) naming the first problem if payload does not match schema `name`."""
    errors = sorted(validator(name).iter_errors(payload), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = truncate("/".join(str(p) for p in first.absolute_path) or "(root)", 200)
        job_id = payload.get("jobId") if isinstance(payload, dict) and isinstance(payload.get("jobId"), str) else None
        raise InvalidEvent(truncate(f"{name} invalid at {where}: {first.message}"),
                           safe_job_id(job_id) if job_id else None)


def parse_time(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"{field} is not an RFC 3339 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"{field} must carry a time zone: {value!r}")
    return parsed


@dataclass(frozen=True)
class RenderRequested:
    job_id: str
    avatar_uri: str
    audio_uri: str
    quality_mode: str | None  # None: the worker's DEFAULT_QUALITY_MODE
    engine: str | None
    fps: Fraction  # exact: "30000/1001" on the wire is Fraction(30000, 1001)
    size: int
    seed: int
    priority: int
    idempotency_key: str | None
    deadline: datetime | None
    requested_at: datetime | None
    traceparent: str | None
    face: Any = None  # the wire form: "largest", {"index": N} or {"box": [x, y, w, h]}; None: largest
    framing: str | None = None  # None: crop
    delivery: dict | None = None  # issue 12: the request's output, canvas, loudness, hls keys (engines/delivery.py)
    driving_video: str | None = None  # a driving video URI (high_quality head motion), fetched like the portrait
    requested_mode: str | None = None  # set by the worker from a lane record's route_requested_mode header


def _frame_rate(payload: dict) -> Fraction:
    """The request's exact fps; a string the schema's pattern lets through ("30/0", "61") is refused here."""
    try:
        fps = parse_fps(payload.get("fps", 25))
        if MIN_FPS <= fps <= MAX_FPS:
            return fps
        problem = f"fps must be between {MIN_FPS} and {MAX_FPS}, got {payload['fps']!r}"
    except InvalidParameter as exc:
        problem = exc.message
    raise InvalidEvent(truncate(f"render.requested.v1 invalid at fps: {problem}"), safe_job_id(payload["jobId"]))


def parse_request(value: bytes | None) -> RenderRequested:
    """Record value -> RenderRequested, or InvalidEvent (malformed JSON, schema violation)."""
    try:
        payload = json.loads(value or b"")
        if not isinstance(payload, dict):
            raise InvalidEvent("render.requested.v1 must be a JSON object")
        check("render.requested.v1", payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedJson(truncate(f"the record value is not JSON: {exc}")) from None
    except RecursionError:  # json.loads (or a message quoting the value) on arrays nested ~1,000 deep
        raise MalformedJson("the record value nests JSON arrays or objects too deeply to be read") from None
    for alias, name in ALIASES.items():
        if alias in payload:
            payload[name] = payload.pop(alias)
    fps = _frame_rate(payload)
    return RenderRequested(
        job_id=payload["jobId"].lower(),
        avatar_uri=payload["avatarUri"],
        audio_uri=payload["audioUri"],
        quality_mode=payload.get("qualityMode"),
        engine=payload.get("engine"),
        fps=fps,
        size=payload.get("size", 512),
        seed=payload.get("seed", 0),
        priority=payload.get("priority", 5),
        idempotency_key=payload.get("idempotencyKey"),
        deadline=parse_time(payload["deadline"], "deadline") if "deadline" in payload else None,
        requested_at=parse_time(payload["requestedAt"], "requestedAt") if "requestedAt" in payload else None,
        traceparent=payload.get("traceparent"),
        face=payload.get("face"),
        framing=payload.get("framing"),
        delivery={k: payload[k] for k in DELIVERY_KEYS if k in payload} or None,
        driving_video=payload.get("drivingVideo"),
    )


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ce_headers(event_type: str, subject: str | None, traceparent: str | None = None) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 Kafka binary-mode headers for one event of `event_type` (e.g. render.completed.v1)."""
    headers = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", str(uuid.uuid4())),
        ("ce_type", f"avatar.{event_type}"),
        ("ce_source", CE_SOURCE),
        ("ce_time", now_iso()),
        ("content-type", "application/json"),
        ("ce_dataschema", schemas.load(event_type)["$id"]),
    ]
    if subject:
        headers.append(("ce_subject", subject))
    if traceparent:
        headers.append(("traceparent", traceparent))
    return [(k, v.encode()) for k, v in headers]


def check_headers(headers: list[tuple[str, bytes]] | None) -> None:
    """Refuse a request whose CloudEvents headers name another event type or spec version.

    Records without ce_ headers are accepted (plain producers); when ce_type or ce_specversion is there, it
    must be avatar.render.requested.v1 / 1.0, so a v2 event is never rendered as if it were v1.
    """
    found = {k: v for k, v in header_dict(headers).items() if k in ("ce_type", "ce_specversion")}
    event_type, version = found.get("ce_type"), found.get("ce_specversion")
    if event_type is not None and event_type != REQUESTED_TYPE:
        raise UnsupportedEventVersion(truncate(
            f"the record's ce_type is {event_type!r}; this worker reads {REQUESTED_TYPE} only", 300))
    if version is not None and version != SPEC_VERSION:
        raise UnsupportedEventVersion(truncate(
            f"the record's ce_specversion is {version!r}; this worker reads CloudEvents {SPEC_VERSION} only", 300))


def encode(event_type: str, payload: dict) -> bytes:
    """Validate an outgoing event against its own schema (a bug here must not reach the wire) and encode it."""
    check(event_type, payload)
    return json.dumps(payload, separators=(",", ":")).encode()


def header_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) for k, v in headers or []}
