"""`avatar-renderer render`: one MP4 from a portrait and a speech file, as one JSON line (or one error sentence)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from schemas.errors import InvalidParameter, RenderError
from engines.delivery import EXTENSIONS
from engines.face_choice import FaceChoice
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import QUALITY_MODES, ModelSettings
from worker.logs import configure_logging

from . import arguments
from .arguments import Parser, output_file
from .delivery_arguments import add_delivery_arguments, delivery_from_args
from .failures import report


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--face", required=True, type=Path, help="portrait image (PNG, JPEG or WebP)")
    parser.add_argument("--audio", required=True, type=Path, help="speech (WAV, MP3, M4A, OGG or FLAC)")
    parser.add_argument("--out", required=True, type=output_file("talk.mp4"),
                        help="the video to write: .mp4, .webm, .mov or .m3u8 (HLS playlist); its extension sets "
                             "the format unless --format is given")
    parser.add_argument("--mode", choices=QUALITY_MODES, default=None,
                        help="quality mode (default: DEFAULT_QUALITY_MODE or auto)")
    parser.add_argument("--engine", default=None, help="force one engine by name (see `avatar-renderer models list`)")
    parser.add_argument("--fps", type=arguments.fps, default="25",
                        help="frames a second, 1-60: 25, 29.97 (= 30000/1001) or an exact fraction 30000/1001")
    arguments.add_face_arguments(parser)
    parser.add_argument("--size", type=int, default=512, help="output width and height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for blinks and head motion (0 to 4294967295)")
    add_delivery_arguments(parser)  # --format, --canvas, --loudness ... (issue 12)
    parser.add_argument("--driving-video", type=Path, default=None, metavar="PATH",
                        help="a video (MP4, MOV, WebM, MKV) whose head motion drives the portrait; high_quality only")


def check_output(args: argparse.Namespace) -> None:
    """--out against the other flags: its extension names the format (or must match --format), and it is none of
    the input files (the render would replace the speech or the portrait with the video). Sets args.output_format."""
    suffix = args.out.suffix.lower().lstrip(".")
    formats = {extension: output for output, extension in EXTENSIONS.items()}
    if args.output_format is None:
        if suffix not in formats:
            raise InvalidParameter(f"--out {args.out}: name the file .mp4, .webm, .mov or .m3u8 (HLS); the "
                                   "format follows the extension (or say it with --format).")
        args.output_format = formats[suffix]
    elif suffix != EXTENSIONS[args.output_format]:
        raise InvalidParameter(f"--out {args.out} does not match --format {args.output_format}: name it "
                               f"{args.out.with_suffix('.' + EXTENSIONS[args.output_format]).name}.")
    if args.output_format == "hls":
        others = sorted(p.name for p in args.out.parent.glob("*.m3u8") if p.name != args.out.name)
        if others:  # the segments' names (init.mp4, seg00000.m4s ...) are the same for every playlist
            raise InvalidParameter(f"--out {args.out}: HLS writes init.mp4 and segNNNNN.m4s beside the playlist, and "
                                   f"{args.out.parent} holds another playlist ({others[0]}); give this render a "
                                   f"folder of its own, e.g. {args.out.parent / args.out.stem / 'index.m3u8'}.")
    inputs = [args.face, args.audio, getattr(args, "driving_video", None), args.background]
    for path in (Path(p) for p in inputs if p is not None):
        if args.out.exists() and path.exists() and os.path.samefile(args.out, path):
            raise InvalidParameter(f"--out {args.out} is one of the inputs ({path}); the video would replace it.")


def render_request(args: argparse.Namespace) -> RenderRequest:
    """The parsed arguments as the render path takes them (fps already exact, --pick-face a FaceChoice)."""
    check_output(args)
    return RenderRequest(
        face_path=args.face, audio_path=args.audio, out_path=args.out, mode=args.mode, engine=args.engine,
        fps=args.fps, size=args.size, seed=args.seed, face=args.pick_face or FaceChoice(),
        framing=args.framing or "crop", delivery=delivery_from_args(args),
        driving_path=getattr(args, "driving_video", None),
    )


def run_render(args: argparse.Namespace) -> int:
    """Raises the error tree's exceptions; the caller reports them (cli.failures)."""
    request = render_request(args)
    engines = EngineRegistry.for_settings(ModelSettings.from_env(dict(os.environ)))
    try:
        result = render(request, engines)
    finally:
        engines.close()
    print(result.to_json())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m cli.render", description="Render one talking-head MP4.")
    add_render_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        return run_render(args)
    except RenderError as exc:
        return report(exc)


if __name__ == "__main__":
    sys.exit(main())
