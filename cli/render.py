"""`avatar-renderer render`: one MP4 from a portrait and a speech file, as one JSON line (or one error sentence)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from schemas.errors import RenderError
from engines.pipeline import RenderRequest, render
from engines.registry import EngineRegistry
from engines.settings import QUALITY_MODES, ModelSettings
from worker.logs import configure_logging

from .arguments import Parser, output_file
from .failures import report


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--face", required=True, type=Path, help="portrait image (PNG, JPEG or WebP)")
    parser.add_argument("--audio", required=True, type=Path, help="speech (WAV, MP3, M4A, OGG or FLAC)")
    parser.add_argument("--out", required=True, type=output_file("talk.mp4"), help="output MP4 path")
    parser.add_argument("--mode", choices=QUALITY_MODES, default=None,
                        help="quality mode (default: DEFAULT_QUALITY_MODE or auto)")
    parser.add_argument("--engine", default=None, help="force one engine by name (see `avatar-renderer models list`)")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", type=int, default=512, help="output width and height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for blinks and head motion (0 to 4294967295)")


def run_render(args: argparse.Namespace) -> int:
    """Raises the error tree's exceptions; the caller reports them (cli.failures)."""
    request = RenderRequest(
        face_path=args.face, audio_path=args.audio, out_path=args.out, mode=args.mode, engine=args.engine,
        fps=args.fps, size=args.size, seed=args.seed,
    )
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
