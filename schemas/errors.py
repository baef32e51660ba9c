"""The one error tree: every failure the product reports on purpose, each with a stable code.

Every code is listed once, here, with the HTTP status a front door answers, whether a retry could help and
what it means; `catalog()` is that table (the README's "Error codes" table is tested against it). Codes
travel on the wire (the `code` of render.failed.v1 and render.status.v1 events, REST and MCP errors), which
is why the tree lives with the event contracts.

Third-party exceptions (boto, httpx, PyAV, torch CUDA OOM, ...) are mapped onto the tree where they cross
into our code: `from_exception()` is that mapping, used by the job step for anything not raised on purpose.
"""

from __future__ import annotations


class RenderError(Exception):
    """Base of every failure reported on purpose."""

    code = "render_error"
    http_status = 500
    retryable = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# ----------------------------------------------------------------------------- the request itself

class InputError(RenderError):
    """The request or one of its inputs cannot be rendered as it is; sending it again will not help."""

    code = "invalid_input"
    http_status = 422


class InvalidParameter(InputError):
    """A render parameter (mode, fps, size, seed, engine ...) is out of range or unknown."""

    code = "invalid_parameter"


class InvalidEvent(InputError):
    """A Kafka record that is not a valid render.requested.v1 event."""

    code = "schema_violation"

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


class MalformedJson(InvalidEvent):
    """The record value is not JSON (or nests deeper than the parser allows)."""

    code = "malformed_json"
    http_status = 400


class UnsupportedEventVersion(InvalidEvent):
    """The record's CloudEvents headers name another event type or spec version than this worker reads."""

    code = "unsupported_event_version"


class InvalidRequest(InputError):
    """A REST or MCP request body that does not fit the API's schema (unknown, missing or mistyped fields)."""

    code = "invalid_request"


class IdempotencyConflict(InputError):
    """An idempotency key was used again with different parameters."""

    code = "idempotency_conflict"
    http_status = 409


class RequestTooLarge(InputError):
    """A request body is larger than its route accepts."""

    code = "request_too_large"
    http_status = 413


# ----------------------------------------------------------------------------- where inputs may come from

class PathNotAllowed(InputError):
    """A path outside ALLOWED_INPUT_ROOTS (or a link leading out of them)."""

    code = "path_not_allowed"
    http_status = 403


class UrlNotAllowed(InputError):
    """A URL whose scheme or host is not allowed (ALLOWED_URL_HOSTS), or that resolves to a private address."""

    code = "url_not_allowed"
    http_status = 403


class InputNotFound(InputError):
    """The input path or object does not exist."""

    code = "input_not_found"
    http_status = 404


class InputTooLarge(InputError):
    """An input file is larger than MAX_IMAGE_BYTES / MAX_AUDIO_BYTES / MAX_VIDEO_BYTES, or a driving video is
    longer than MAX_AUDIO_SECONDS."""

    code = "input_too_large"
    http_status = 413


class UnsupportedFormat(InputError):
    """An input's bytes are not one of the accepted image or audio formats."""

    code = "unsupported_format"
    http_status = 415


class FetchFailed(RenderError):
    """Downloading an https:// or s3:// input failed in a way a retry may fix (network, throttling, 5xx)."""

    code = "fetch_failed"
    http_status = 502
    retryable = True


# ----------------------------------------------------------------------------- the media

class UnreadableInput(InputError):
    """The file exists but could not be read or decoded."""

    code = "unreadable_input"


class NotAnImage(InputError):
    """The portrait is not a PNG, JPEG or WebP image."""

    code = "not_an_image"
    http_status = 415


class ImageTooLarge(InputError):
    """The portrait has more pixels than MAX_IMAGE_PIXELS."""

    code = "image_too_large"
    http_status = 413


class NoFaceFound(InputError):
    """No face was found in the portrait."""

    code = "no_face"


class NotAudio(InputError):
    """The speech file is not WAV, MP3, M4A, OGG or FLAC audio."""

    code = "not_audio"
    http_status = 415


class EmptyAudio(InputError):
    """The speech file holds no samples."""

    code = "empty_audio"


class SilentAudio(InputError):
    """The speech file is silent throughout."""

    code = "silent_audio"


class AudioTooLong(InputError):
    """The speech is longer than MAX_AUDIO_SECONDS."""

    code = "audio_too_long"
    http_status = 413


# ----------------------------------------------------------------------------- this machine and its engines

class EngineUnavailable(RenderError):
    """The requested mode or engine cannot run here (no GPU, checkpoints missing, not built yet)."""

    code = "engine_unavailable"
    http_status = 422


class CheckpointError(EngineUnavailable):
    """A checkpoint file is present but is not the upstream layout (wrong keys, shapes or format)."""

    code = "bad_checkpoint"


class NoLivePool(EngineUnavailable):
    """No live worker pool serves the requested mode or engine now (per the fleet's heartbeats); refused before queueing."""

    code = "no_live_pool"
    http_status = 409


class OutOfMemory(RenderError):
    """The GPU (or the host) ran out of memory during the render; another try may find it free."""

    code = "out_of_memory"
    http_status = 503
    retryable = True


class EncodeError(RenderError):
    """Writing the video failed."""

    code = "encode_failed"
    retryable = True


class StorageError(RenderError):
    """Storing the finished video failed (disk, object store)."""

    code = "storage_failed"
    http_status = 502
    retryable = True


class DeadlineExceeded(RenderError):
    """The request's deadline passed before it was rendered."""

    code = "deadline_exceeded"
    http_status = 504


class InternalError(RenderError):
    """An exception nobody meant to raise (a bug or a passing fault); retried."""

    code = "internal_error"
    retryable = True


# ----------------------------------------------------------------------------- the front doors

class Unauthorized(RenderError):
    """A missing or unknown API key (API_KEYS)."""

    code = "unauthorized"
    http_status = 401


class UnknownJob(RenderError):
    """No job with this id is known to this gateway."""

    code = "unknown_job"
    http_status = 404


class OutputNotAvailable(RenderError):
    """The job has no video to download: it is still queued or running, it failed, or its file is gone."""

    code = "output_not_available"
    http_status = 404


class HttpError(RenderError):
    """An HTTP-level refusal (unknown route, method not allowed), answered with the HTTP status it names."""

    code = "http_error"
    http_status = 404


class BackendUnavailable(RenderError):
    """The job queue cannot take work now (broker unreachable)."""

    code = "unavailable"
    http_status = 503
    retryable = True


class SettingsError(RenderError):
    """A setting (environment variable) has a value the program cannot use; the message names it."""

    code = "bad_setting"


class DownloadError(RenderError):
    """A model download failed (network, mirror, checksum)."""

    code = "download_failed"
    http_status = 502
    retryable = True


class TensorRTBuildError(RenderError):
    """`avatar-renderer trt-build` could not build a TensorRT engine (parser, FP16 support, builder)."""

    code = "tensorrt_build_failed"


def _walk(cls: type[RenderError]):
    yield cls
    for sub in cls.__subclasses__():
        yield from _walk(sub)


def catalog() -> list[dict]:
    """Every error code once: code, HTTP status, retryable, meaning (the first line of its docstring)."""
    rows, seen = [], set()
    for cls in _walk(RenderError):
        if cls.code in seen or cls.__module__ != __name__:
            continue
        seen.add(cls.code)
        rows.append({"code": cls.code, "httpStatus": cls.http_status, "retryable": cls.retryable,
                     "meaning": (cls.__doc__ or "").strip().splitlines()[0]})
    return rows


# Third-party exceptions by (module prefix, class name) -> our class. Matched by name along the MRO, so this
# module imports none of those libraries.
_FOREIGN = (
    ("torch", "OutOfMemoryError", OutOfMemory),
    ("builtins", "MemoryError", OutOfMemory),
    ("botocore", "EndpointConnectionError", StorageError),
    ("botocore", "ClientError", StorageError),
    ("botocore", "BotoCoreError", StorageError),
    ("httpx", "TransportError", FetchFailed),
    ("httpx", "HTTPStatusError", FetchFailed),
    ("av", "FFmpegError", EncodeError),
    ("confluent_kafka", "KafkaException", BackendUnavailable),
)


def from_exception(exc: BaseException) -> RenderError:
    """`exc` as a member of the tree: itself when it is one, else the mapped class, else InternalError."""
    if isinstance(exc, RenderError):
        return exc
    for klass in type(exc).__mro__:
        for module, name, ours in _FOREIGN:
            if klass.__name__ == name and klass.__module__.split(".")[0] == module:
                return ours(f"{type(exc).__name__}: {exc}"[:2000])
    return InternalError(f"{type(exc).__name__}: {exc}"[:2000])
