"""Argument parsing that refuses a user's mistake with one line, using the render path's own rules.

`Parser` prints `error: <sentence>` and exits 2 instead of argparse's usage block, as every other failure of
the command line does. The `type=` functions below apply engines.pipeline's checks (size, fps, seed) while the
arguments are parsed, so `submit` and `bench` refuse what `render` would refuse, before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

from engines.pipeline import check_fps, check_seed, check_size
from schemas.errors import InputError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: `error: <what is wrong> (see: <prog> --help)`."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def checked(check: Callable[[int], int]) -> Callable[[str], int]:
    """A `type=` function: a whole number that passes `check` (one of engines.pipeline's checks)."""

    def parse(text: str) -> int:
        try:
            return check(_whole(text))
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.message.rstrip(".")) from None

    parse.__name__ = check.__name__.removeprefix("check_")  # argparse names the type in some messages
    return parse


size = checked(check_size)
fps = checked(check_fps)
seed = checked(check_seed)


def sizes(text: str) -> list[int]:
    """A comma-separated list of output sizes, e.g. `256,512,1024`; at least one."""
    values = [size(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 256,512")
    return values


def positive_number(text: str) -> float:
    value = _number(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def positive_whole(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    value = _whole(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is from 1 to 65535, got {value}")
    return value
