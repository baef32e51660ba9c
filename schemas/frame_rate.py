"""Frame rates as exact fractions: 25, 29.97, "30000/1001" ... from the wire and the command line -> Fraction.

Broadcast rates are not whole numbers: NTSC video runs at 30000/1001 (about 29.97) frames a second. Kept as a
`fractions.Fraction`, frame i starts at exactly i / fps seconds, so timestamps never drift. The decimal names
people use for the NTSC rates (23.976, 29.97, 59.94) mean the exact fractions, not the decimals.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from schemas.errors import InvalidParameter

# The decimal spellings of the NTSC rates -> the rates they name.
NTSC = {
    "23.976": Fraction(24000, 1001), "23.98": Fraction(24000, 1001),
    "29.97": Fraction(30000, 1001),
    "47.952": Fraction(48000, 1001), "47.95": Fraction(48000, 1001),
    "59.94": Fraction(60000, 1001),
}
MIN_FPS, MAX_FPS = 1, 60  # the range render.requested.v1 and every front door accept
# A larger denominator buys no real frame rate, only timestamps the MP4 time scale cannot hold exactly.
MAX_DENOMINATOR = 1001
# What render.requested.v1 and the REST spec accept as a string (parse_fps is as strict, plus surrounding spaces).
TEXT_PATTERN = r"^([0-9]{1,9}(\.[0-9]{1,9})?|[0-9]{1,9}/[1-9][0-9]{0,8})$"
_RATIO = re.compile(r"([0-9]{1,9})/([0-9]{1,9})")
_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def _refuse(value) -> InvalidParameter:
    return InvalidParameter(f"fps must be a number or a fraction N/D, such as 25, 29.97 or 30000/1001, got {value!r}.")


def parse_fps(value) -> Fraction:
    """An int, a float, a Fraction or a string ("25", "29.97", "30000/1001") -> the exact frame rate.

    Only the form is checked here; the render path checks the range (engines.pipeline.check_fps).
    """
    if isinstance(value, bool):
        raise _refuse(value)
    if isinstance(value, (int, Fraction)):
        rate = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(value)
        rate = _decimal(repr(value))  # repr is the shortest spelling: 29.97, not 29.969999...
    elif isinstance(value, str):
        text = value.strip()
        ratio = _RATIO.fullmatch(text)
        if ratio:
            if int(ratio.group(2)) == 0:
                raise _refuse(value)
            rate = Fraction(int(ratio.group(1)), int(ratio.group(2)))
        elif _DECIMAL.fullmatch(text):
            rate = _decimal(text)
        else:
            raise _refuse(value)
    else:
        raise _refuse(value)
    if rate.denominator > MAX_DENOMINATOR:
        raise InvalidParameter(f"fps as a fraction may have a denominator of at most {MAX_DENOMINATOR} "
                               f"(e.g. 30000/1001), got {value!r}.")
    return rate


def _decimal(text: str) -> Fraction:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return NTSC.get(text) or Fraction(text)


def fps_text(rate: Fraction) -> str:
    """The wire spelling: "25" or "30000/1001" (what parse_fps reads back to the same rate)."""
    return str(Fraction(rate))


def fps_wire(rate: Fraction) -> int | str:
    """render.requested.v1 `fps`: an integer when whole (what every worker reads), else "30000/1001"."""
    rate = Fraction(rate)
    return rate.numerator if rate.denominator == 1 else fps_text(rate)


def fps_number(rate: Fraction) -> int | float:
    """A plain number for fields that were numeric before fractions: 25, or 29.97 (3 decimals)."""
    rate = Fraction(rate)
    return rate.numerator if rate.denominator == 1 else round(float(rate), 3)
