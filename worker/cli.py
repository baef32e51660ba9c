"""`avatar-renderer`: the one entry point, with a subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from engines.pipeline import add_render_arguments, run_render
from engines.settings import SettingsError

from .logs import configure_logging


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


def _api(args: argparse.Namespace) -> int:
    from .api import run_api

    return run_api(args)


def _mcp(args: argparse.Namespace) -> int:
    from .mcp_server import run_mcp

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
    bench.set_defaults(handler=_bench)

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
