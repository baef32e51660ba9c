"""How the command line reports a failure raised on purpose: one `error: <sentence>` line and an exit status.

Exit 2: the user's input or settings (InputError, SettingsError); 3: the requested mode or engine cannot run
here (EngineUnavailable); 1: any other reported failure. Exceptions outside the error tree are bugs and keep
their traceback.
"""

from __future__ import annotations

import sys

from schemas.errors import EngineUnavailable, InputError, RenderError, SettingsError


def exit_status(exc: RenderError) -> int:
    if isinstance(exc, (InputError, SettingsError)):
        return 2
    if isinstance(exc, EngineUnavailable):
        return 3
    return 1


def report(exc: RenderError) -> int:
    """Print `exc` as one line on stderr; returns the exit status for it."""
    print(f"error: {exc.message}", file=sys.stderr)
    return exit_status(exc)
