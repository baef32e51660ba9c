"""Error types that carry a stable code and whether a retry could help.

Every failure a user can cause (bad file, no face, silent audio) is an InputError with its own code and one
clear sentence; the CLI prints that sentence, the worker copies code/message/retryable into the failure event.
"""


class RenderError(Exception):
    """Base of every failure the render path reports on purpose."""

    code = "render_error"
    retryable = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(RenderError):
    code = "invalid_input"


class UnreadableInput(InputError):
    code = "unreadable_input"


class NotAnImage(InputError):
    code = "not_an_image"


class ImageTooLarge(InputError):
    code = "image_too_large"


class NoFaceFound(InputError):
    code = "no_face"


class NotAudio(InputError):
    code = "not_audio"


class EmptyAudio(InputError):
    code = "empty_audio"


class SilentAudio(InputError):
    code = "silent_audio"


class AudioTooLong(InputError):
    code = "audio_too_long"


class EngineUnavailable(RenderError):
    """The requested mode or engine cannot run on this machine (no GPU, checkpoints missing, ...)."""

    code = "engine_unavailable"


class EncodeError(RenderError):
    code = "encode_failed"
    retryable = True
