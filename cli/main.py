"""`avatar-renderer`: the one entry point, with a subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from . import arguments
from .failures import report
from .delivery_arguments import add_delivery_arguments
from .render import add_render_arguments, run_render
from engines.settings import int_env
from schemas.errors import RenderError, SettingsError

from worker.logs import configure_logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _bench(args: argparse.Namespace) -> int:
    if getattr(args, "wav2lip", False):
        from .bench_wav2lip import run_wav2lip_bench

        return run_wav2lip_bench(args)
    if getattr(args, "hq", False):
        from .bench_hq import run_hq_bench

        return run_hq_bench(args)
    if getattr(args, "sadtalker", False):
        from .bench_sadtalker import run_sadtalker_bench

        return run_sadtalker_bench(args)
    if getattr(args, "worker", False):
        from .bench_worker import run_worker_bench

        return run_worker_bench(args)
    from .bench import run_bench

    return run_bench(args)


def _worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    return run_worker(args, os.environ)


def _broker(args: argparse.Namespace) -> int:
    from .broker import run_broker

    return run_broker(args)


def _submit(args: argparse.Namespace) -> int:
    from .submit import run_submit

    return run_submit(args)


def add_kafka_commands(commands) -> None:
    """The Kafka worker's subcommands: worker, broker, submit (see README "Kafka worker")."""
    worker = commands.add_parser("worker", help="consume render requests from Kafka and render them")
    worker.add_argument("--concurrency", type=arguments.positive_whole, default=None, help="jobs at once (default WORKER_CONCURRENCY or 1)")
    worker.set_defaults(handler=_worker)

    broker = commands.add_parser("broker", help="run the embedded development broker (Tansu) with the topics")
    broker.add_argument("--port", type=arguments.port, default=9092)
    broker.add_argument("--partitions", type=arguments.positive_whole, default=3,
                        help="partitions of the request topic")
    broker.set_defaults(handler=_broker)

    submit = commands.add_parser("submit", help="publish one render request (and wait for its result)")
    submit.add_argument("--face", required=True, help="portrait: path, file://, s3:// or https:// URI")
    submit.add_argument("--audio", required=True, help="speech: path, file://, s3:// or https:// URI")
    submit.add_argument("--mode", choices=("auto", "real_time", "high_quality"), default=None)
    submit.add_argument("--engine", default=None)
    submit.add_argument("--size", type=arguments.size, default=None, help="output width and height in pixels")
    submit.add_argument("--fps", type=arguments.fps, default=None,
                        help="frames a second, 1-60: 25, 29.97 (= 30000/1001) or an exact fraction 30000/1001")
    arguments.add_face_arguments(submit)
    add_delivery_arguments(submit)  # --format, --canvas, --loudness ... (issue 12)
    submit.add_argument("--driving-video", default=None, metavar="PATH|URI",
                        help="a video whose head motion drives the portrait (path, file://, s3:// or https://); "
                             "high_quality only")
    submit.add_argument("--wait", action="store_true", help="wait for the completion or failure event and print it")
    submit.add_argument("--timeout", type=arguments.positive_number, default=120.0, help="seconds --wait waits")
    submit.set_defaults(handler=_submit)


def _api_address(args: argparse.Namespace, env) -> None:
    """--host/--port, else API_HOST/API_PORT, read when `api` runs (a bad API_PORT must not break --help)."""
    if args.host is None:
        args.host = env.get("API_HOST", "").strip() or "127.0.0.1"
    if args.port is None:
        args.port = int_env(env, "API_PORT", 8080, minimum=1)
        if args.port > 65535:
            raise SettingsError(f"API_PORT must be a TCP port from 1 to 65535, got {args.port}.")


def _api(args: argparse.Namespace) -> int:
    _api_address(args, os.environ)
    from gateway.rest import run_api

    return run_api(args, os.environ)


def _mcp(args: argparse.Namespace) -> int:
    from gateway.mcp import run_mcp

    return run_mcp(args, os.environ)


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.Parser(prog="avatar-renderer", description="Portrait + speech -> talking-head MP4.")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help="default: LOG_LEVEL or INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render one MP4 locally")
    add_render_arguments(render)
    render.set_defaults(handler=run_render)

    bench = commands.add_parser("bench", help="measure render speed and write JSON figures")
    bench.add_argument("--out", type=arguments.output_file("bench.json"), default="out/bench.json",
                       help="where to write the JSON figures")
    bench.add_argument("--sizes", type=arguments.sizes, default="256,512,1024", help="comma-separated output sizes")
    bench.add_argument("--seconds", type=arguments.positive_number, default=10.0,
                       help="length of the speech clip rendered")
    bench.add_argument("--repeats", type=arguments.positive_whole, default=2,
                       help="renders per size; the fastest is reported")
    bench.add_argument("--long", type=arguments.positive_number, nargs="?", const=3600.0, default=None,
                       metavar="SECONDS", help="also render SECONDS (default 3600) of looped speech at 256 px in a "
                                               "fresh process and report its peak RSS")
    bench.add_argument("--hls", action="store_true",
                       help="also time the first HLS segment of a 512 px real_time job through the job step "
                            "(segments of 1 s and 2 s), added as `hls` to the JSON")
    bench.add_argument("--worker", action="store_true",
                       help="measure the Kafka worker path instead: jobs/s and latency added over a direct render")
    bench.add_argument("--wav2lip", action="store_true",
                       help="measure the Wav2Lip engine instead (random weights): model frames/s at batch 1/32/128, "
                            "end-to-end 512x512 render")
    bench.add_argument("--hq", action="store_true",
                       help="measure the high_quality chain instead (random weights): FOMM, Diff2Lip, GFPGAN "
                            "frames/s, end to end at 512 and 1024, peak GPU memory (a reduced job on a CPU)")
    bench.add_argument("--sadtalker", action="store_true",
                       help="measure the SadTalker -> Wav2Lip chain instead (random weights): coefficient track, "
                            "face renderer frames/s (fp32 / fp16), end to end at 512 (a reduced job on a CPU)")
    bench.set_defaults(handler=_bench)
    add_kafka_commands(commands)
    from .trt_build import add_trt_build_command

    from .models import add_models_command

    add_models_command(commands)
    add_trt_build_command(commands)

    api = commands.add_parser("api", help="serve the REST gateway (POST /render, GET /status/{jobId})")
    api.add_argument("--host", default=None, help="default: API_HOST or 127.0.0.1")
    api.add_argument("--port", type=arguments.port, default=None, help="default: API_PORT or 8080")
    api.add_argument("--backend", choices=("auto", "kafka", "inprocess"), default="auto",
                     help="auto: Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else render in this process")
    api.set_defaults(handler=_api)

    mcp = commands.add_parser("mcp", help="serve the MCP tools (render_avatar, get_render_status, list_engines) on stdio")
    mcp.add_argument("--backend", choices=("auto", "kafka", "inprocess"), default="auto",
                     help="auto: Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else render in this process")
    mcp.set_defaults(handler=_mcp)
    return parser


def _log_level(args: argparse.Namespace, env) -> str:
    level = args.log_level or env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL={level!r} is not one of {', '.join(LOG_LEVELS)}.")
    return level


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A failure from the error tree is one `error:` line (see cli/failures.py);
    anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        configure_logging(_log_level(args, os.environ))
        status = args.handler(args)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
        return status
    except RenderError as exc:
        return report(exc)
    except BrokenPipeError:  # `... | head` stopped reading: nothing left to say to it (as Python's docs advise)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when stdout is flushed
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it


if __name__ == "__main__":
    sys.exit(main())
