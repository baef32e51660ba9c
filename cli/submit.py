"""`avatar-renderer submit`: publish one render.requested.v1 event and, with --wait, print its result."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from schemas.events import header_dict, now_iso
from schemas.frame_rate import fps_wire
from worker.job_step import queued_status
from worker.kafka import ensure_broker_reachable, publish_request, reader, request_producer
from worker.settings import Topics

from .delivery_arguments import delivery_from_args

BROKER_CHECK_SECONDS = 5.0


def build_request(face: str, audio: str, mode: str | None = None, **extra) -> dict:
    def uri(ref: str) -> str:
        return ref if "://" in ref else Path(ref).resolve().as_uri()

    request = {"jobId": str(uuid.uuid4()), "avatarUri": uri(face), "audioUri": uri(audio),
               "qualityMode": mode or "auto", "requestedAt": now_iso()}
    request.update({k: v for k, v in extra.items() if v is not None})
    return request


def publish(bootstrap: str, topics: Topics, request: dict, raw: bytes | None = None, partition: int | None = None,
            producer=None) -> None:
    """Publish a request (validated, unless `raw` bytes are given as-is) after its `queued` status."""
    producer = producer or request_producer(bootstrap, "avatar-renderer-submit")
    status = None if raw is not None else queued_status(request["jobId"], request.get("qualityMode", "auto"))
    publish_request(producer, topics, request, status=status, raw=raw, partition=partition, timeout=30)


class ResultWatcher:
    """Reads completed + failed topics from their current ends (call before publishing), without a group."""

    def __init__(self, bootstrap: str, topics: Topics):
        from confluent_kafka import TopicPartition

        self.consumer = reader(bootstrap, "avatar-renderer-submit", **{"fetch.wait.max.ms": 50})
        partitions = []
        for topic in (topics.completed, topics.failed):
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            for pid in meta.partitions:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=10)
                partitions.append(TopicPartition(topic, pid, high))
        self.consumer.assign(partitions)
        self.topics = topics

    def wait(self, job_ids: set[str], timeout: float) -> dict[str, tuple[str, dict, dict]]:
        """jobId -> (topic, event, headers) for the first result of each job; stops at timeout."""
        results: dict[str, tuple[str, dict, dict]] = {}
        deadline = time.monotonic() + timeout
        while set(job_ids) - set(results) and time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                continue
            event = json.loads(message.value())
            if event.get("jobId") in job_ids and event["jobId"] not in results:
                results[event["jobId"]] = (message.topic(), event, header_dict(message.headers()))
        return results

    def close(self) -> None:
        self.consumer.close()


def uri_of(reference: str) -> str:
    """A URI as is; a local path as the file:// URI of its absolute path."""
    return reference if "://" in reference else Path(reference).resolve().as_uri()


def check_with_the_registry(mode: str | None, engine: str | None, driving_video: bool) -> None:
    """The registry's up-front refusals, as the REST and MCP doors make them (InvalidParameter): an unknown
    engine, an engine with a mode it does not serve, a driving video with a real_time mode or engine. Names and
    modes only: whether an engine can run is the workers' business (this machine may have no GPU)."""
    from engines.hardware import Hardware
    from engines.registry import EngineRegistry
    from engines.settings import ModelSettings

    registry = EngineRegistry(ModelSettings.from_env(dict(os.environ)), Hardware(cuda=False))
    registry.check_request(mode, engine)
    if driving_video:
        registry.check_driving_video(mode or "auto", engine)


def request_from_args(args) -> dict:
    """The render.requested.v1 event of `submit`'s arguments (fps "30000/1001" when not whole, face's wire form)."""
    request = build_request(str(args.face), str(args.audio), args.mode, engine=args.engine, size=args.size,
                            fps=fps_wire(args.fps) if args.fps is not None else None, framing=args.framing)
    if args.pick_face:  # `face` is the portrait's parameter of build_request
        request["face"] = args.pick_face.to_wire()
    request.update(delivery_from_args(args).to_wire())  # output, canvas, loudness, hls (issue 12)
    driving_video = getattr(args, "driving_video", None)
    if args.engine or driving_video:  # refused here, before anything is published
        check_with_the_registry(args.mode, args.engine, bool(driving_video))
    if driving_video:
        request["drivingVideo"] = uri_of(str(driving_video))
    canvas = request.get("canvas", {})
    if "backgroundUri" in canvas and "://" not in canvas["backgroundUri"]:
        canvas["backgroundUri"] = Path(canvas["backgroundUri"]).resolve().as_uri()
    return request


def run_submit(args) -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topics = Topics.from_env(dict(os.environ))
    request = request_from_args(args)
    ensure_broker_reachable(bootstrap, BROKER_CHECK_SECONDS)  # no broker: one line (BackendUnavailable), not 30 s of logs
    watcher = ResultWatcher(bootstrap, topics) if args.wait else None
    publish(bootstrap, topics, request)
    print(json.dumps({"submitted": request}), flush=True)
    if watcher is None:
        return 0
    try:
        results = watcher.wait({request["jobId"]}, args.timeout)
    finally:
        watcher.close()
    if request["jobId"] not in results:
        print(f"error: no result for job {request['jobId']} within {args.timeout:.0f} s", file=sys.stderr)
        return 4
    topic, event, headers = results[request["jobId"]]
    print(json.dumps({"topic": topic, "type": headers.get("ce_type"), "event": event}), flush=True)
    return 0 if topic == topics.completed else 1
