"""Argument parsing that refuses a user's mistake with one line, using the render path's own rules.

`Parser` prints `error: <sentence>` and exits 2 instead of argparse's usage block, as every other failure of
the command line does. The `type=` functions below apply engines.pipeline's checks (size, fps, face) while the
arguments are parsed, so `submit` and `bench` refuse what `render` would refuse, before any work starts; and
an output file that cannot be written is refused before a render spends minutes on it.
"""

from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Callable, NoReturn

from engines.face_choice import FaceChoice
from engines.pipeline import check_fps, check_size
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


def fps(text: str) -> Fraction:
    """`25`, `29.97` (the NTSC rate 30000/1001; likewise 23.976 and 59.94) or an exact `30000/1001`, from 1 to 60."""
    try:
        return check_fps(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.message.rstrip(".")) from None


def face(text: str) -> FaceChoice:
    """`largest`, `index:N` (faces left to right from 0) or `box:X,Y,W,H` (the photo's pixels)."""
    try:
        return FaceChoice.parse(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.message.rstrip(".")) from None


def add_face_arguments(parser: argparse.ArgumentParser) -> None:
    """--pick-face and --framing, the same for `render` and `submit`."""
    from engines.pipeline import FRAMINGS

    parser.add_argument("--pick-face", type=face, default=None, metavar="largest|index:N|box:X,Y,W,H",
                        help="which face of the photo to animate (default: the largest)")
    parser.add_argument("--framing", choices=FRAMINGS, default=None,
                        help="crop: a square around the face (default); original: the whole photo")


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



def output_file(example: str) -> Callable[[str], Path]:
    """A `type=` function: a regular file to write (or to create), not a folder, a device or a pipe, not under a
    file, in a folder this user may write (the folders missing are created when the file is written). `example`
    is the file name suggested. The output is written beside it and moved over it, so a device named here (say
    /dev/null) would be replaced by a file, not written through: refused."""

    def parse(text: str) -> Path:
        out = Path(text)
        try:
            if out.is_dir():
                raise argparse.ArgumentTypeError(f"{out} is a directory; give the file to write, e.g. {out / example}")
            if text.endswith(("/", os.sep)):
                raise argparse.ArgumentTypeError(f"{text} names a folder (it ends with /); give the file to write, "
                                                 f"e.g. {out / example}")
            if out.exists() and not out.is_file():
                raise argparse.ArgumentTypeError(f"{out} is not a regular file (a device, pipe or socket); "
                                                 "give a file to write")
            folder = out.absolute().parent
            existing = next(p for p in (folder, *folder.parents) if p.exists())
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise argparse.ArgumentTypeError(f"{out} cannot be written: {exc.strerror or exc}") from None
        if not existing.is_dir():
            raise argparse.ArgumentTypeError(f"{out} cannot be written: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{out} cannot be written: no permission to write in {existing}")
        return out

    parse.__name__ = "output file"
    return parse
