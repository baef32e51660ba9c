"""`avatar-renderer`: the one entry point, with a subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from .render import add_render_arguments, run_render
from engines.settings import SettingsError

from worker.logs import configure_logging


def _bench(args: argparse.Namespace) -> int:
    if getattr(args, "wav2lip", False):
        from .bench_wav2lip import run_wav2lip_bench

        return run_wav2lip_bench(args)
    if getattr(args, "worker", False):
        from .bench_worker import run_worker_bench

        return run_worker_bench(args)
    from .bench import run_bench

    return run_bench(args)


def _worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    return run_worker(args)


def _broker(args: argparse.Namespace) -> int:
    from .broker import run_broker

    return run_broker(args)


def _submit(args: argparse.Namespace) -> int:
    from .submit import run_submit

    return run_submit(args)


def add_kafka_commands(commands) -> None:
    """The Kafka worker's subcommands: worker, broker, submit (see README "Kafka worker")."""
    worker = commands.add_parser("worker", help="consume render requests from Kafka and render them")
    worker.add_argument("--concurrency", type=int, default=None, help="jobs at once (default WORKER_CONCURRENCY or 1)")
    worker.set_defaults(handler=_worker)

    broker = commands.add_parser("broker", help="run the embedded development broker (Tansu) with the topics")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--partitions", type=int, default=3, help="partitions of the request topic")
    broker.set_defaults(handler=_broker)

    submit = commands.add_parser("submit", help="publish one render request (and wait for its result)")
    submit.add_argument("--face", required=True, help="portrait: path, file://, s3:// or https:// URI")
    submit.add_argument("--audio", required=True, help="speech: path, file://, s3:// or https:// URI")
    submit.add_argument("--mode", choices=("auto", "real_time", "high_quality"), default=None)
    submit.add_argument("--engine", default=None)
    submit.add_argument("--size", type=int, default=None)
    submit.add_argument("--fps", type=int, default=None)
    submit.add_argument("--wait", action="store_true", help="wait for the completion or failure event and print it")
    submit.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits")
    submit.set_defaults(handler=_submit)


def _api(args: argparse.Namespace) -> int:
    from gateway.rest import run_api

    return run_api(args)


def _mcp(args: argparse.Namespace) -> int:
    from gateway.mcp import run_mcp

    return run_mcp(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-renderer", description="Portrait + speech -> talking-head MP4.")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render one MP4 locally")
    add_render_arguments(render)
    render.set_defaults(handler=run_render)

    bench = commands.add_parser("bench", help="measure render speed and write JSON figures")
    bench.add_argument("--out", default="out/bench.json", help="where to write the JSON figures")
    bench.add_argument("--sizes", default="256,512,1024", help="comma-separated output sizes")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of the speech clip rendered")
    bench.add_argument("--repeats", type=int, default=2, help="renders per size; the fastest is reported")
    bench.add_argument("--worker", action="store_true",
                       help="measure the Kafka worker path instead: jobs/s and latency added over a direct render")
    bench.add_argument("--wav2lip", action="store_true",
                       help="measure the Wav2Lip engine instead (random weights): model frames/s at batch 1/32/128, "
                            "end-to-end 512x512 render")
    bench.set_defaults(handler=_bench)
    add_kafka_commands(commands)
    from trt_build.cli import add_trt_build_command

    from .models import add_models_command

    add_models_command(commands)
    add_trt_build_command(commands)

    api = commands.add_parser("api", help="serve the REST gateway (POST /render, GET /status/{jobId})")
    api.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"))
    api.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8080")))
    api.add_argument("--backend", choices=("auto", "kafka", "inprocess"), default="auto",
                     help="auto: Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else render in this process")
    api.set_defaults(handler=_api)

    mcp = commands.add_parser("mcp", help="serve the MCP tools (render_avatar, get_render_status, list_engines) on stdio")
    mcp.add_argument("--backend", choices=("auto", "kafka", "inprocess"), default="auto",
                     help="auto: Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else render in this process")
    mcp.set_defaults(handler=_mcp)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
