"""Command-line flags of the broadcast formats (engines/delivery.py), the same for `render` and `submit`:
--format, --canvas, --place, --scale, --background, --loudness, --true-peak, --segment-seconds, --hls-mp4."""

from __future__ import annotations

import argparse
import re

from engines.canvas import CANVASES, Canvas
from engines.delivery import DEFAULT_SEGMENT_SECONDS, OUTPUTS, Delivery
from engines.loudness import PRESETS, LoudnessTarget
from schemas.errors import InvalidParameter

_COLOUR = re.compile(r"^#?[0-9a-fA-F]{6}$")


def _place(text: str) -> tuple[float, float]:
    try:
        x, y = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give X,Y as fractions of the canvas (0.5,0.5 is the middle), got {text!r}") from None
    return x, y


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_delivery_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broadcast formats")
    group.add_argument("--format", choices=OUTPUTS, default=None, dest="output_format",
                       help="mp4 (H.264+AAC), webm (VP9 with alpha), mov (ProRes 4444 with alpha), hls (segments "
                            "while rendering; --out names the playlist, e.g. out/show/index.m3u8); default: "
                            "render follows --out's extension, submit mp4")
    group.add_argument("--canvas", choices=list(CANVASES), default=None, help="place the avatar on this canvas")
    group.add_argument("--place", type=_place, default=None, metavar="X,Y",
                       help="the avatar's centre on the canvas, fractions of its width and height (default 0.5,0.5)")
    group.add_argument("--scale", type=_number, default=None,
                       help="the avatar's height as a fraction of the canvas height (default: as large as fits)")
    group.add_argument("--background", default=None, metavar="#RRGGBB|IMAGE",
                       help="canvas background: a colour or an image file (default black; none for webm/mov)")
    group.add_argument("--loudness", default=None, metavar="|".join(PRESETS) + "|LUFS",
                       help="bring the speech to this loudness (EBU R128 -23, ATSC A/85 -24, web -16, or a number)")
    group.add_argument("--true-peak", type=_number, default=None, metavar="DBTP",
                       help="true-peak ceiling with --loudness (default: the preset's, or -1)")
    group.add_argument("--segment-seconds", type=_number, default=None,
                       help=f"with --format hls: segment length, 1 to 2 s (default {DEFAULT_SEGMENT_SECONDS:g})")
    group.add_argument("--hls-mp4", action="store_true", help="with --format hls: also write one MP4 at the end")


def delivery_from_args(args: argparse.Namespace) -> Delivery:
    """The Delivery the flags ask for; a bad combination raises InvalidParameter (exit 2)."""
    canvas = None
    canvas_flags = (args.place, args.scale, args.background)
    if args.canvas is not None or any(flag is not None for flag in canvas_flags):
        x, y = args.place or (0.5, 0.5)
        colour = image = None
        if args.background is not None:
            if args.background.startswith("#") and not _COLOUR.match(args.background):
                raise InvalidParameter(f"--background {args.background} is not a colour: give #RRGGBB, e.g. #1a2b3c.")
            colour, image = (args.background, None) if _COLOUR.match(args.background) else (None, args.background)
        canvas = Canvas(size=args.canvas or "1920x1080", x=x, y=y, scale=args.scale, background=colour,
                        background_uri=image)
    loudness = None
    if args.true_peak is not None and args.loudness is None:
        raise InvalidParameter("--true-peak is the ceiling of a loudness target: give --loudness too, e.g. "
                               f"--loudness ebu-r128 --true-peak {args.true_peak:g}.")
    if args.loudness is not None:
        loudness = LoudnessTarget.parse(args.loudness, args.true_peak)
    output = args.output_format or "mp4"
    if output != "hls" and (args.segment_seconds is not None or args.hls_mp4):
        raise InvalidParameter(f"--segment-seconds and --hls-mp4 go with --format hls; this output is {output}.")
    segment_seconds = DEFAULT_SEGMENT_SECONDS if args.segment_seconds is None else args.segment_seconds
    return Delivery(output=output, canvas=canvas, loudness=loudness, segment_seconds=segment_seconds,
                    hls_mp4=args.hls_mp4)
