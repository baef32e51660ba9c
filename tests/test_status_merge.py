"""The Kafka gateway's job view is the same whichever of a job's events it reads first: the status topic's and the
completed topic's records interleave (two topics, no order between them)."""

from __future__ import annotations

import itertools

from gateway.backends import succeeded_status
from gateway.kafka_backend import KafkaBackend


def _segment(index: int) -> dict:
    return {"index": index, "uri": f"file:///out/j/seg{index:05d}.m4s", "durationSeconds": 1.0,
            "startSeconds": float(index)}


def test_an_hls_job_ends_on_its_last_segment_in_any_read_order(broker, topics, tmp_path):
    running = [{"jobId": "j", "state": "running", "attempt": 1, "playlistUri": "file:///out/j/index.m3u8",
                "segment": _segment(i), "updatedAt": f"2026-01-01T00:00:0{i}.000Z"} for i in range(3)]
    completion = {"jobId": "j", "completedAt": "2026-01-01T00:00:04.000Z", "attempt": 1,
                  "outputUri": "file:///out/j/index.m3u8", "outputFormat": "hls",
                  "segments": [_segment(i) for i in range(3)]}
    succeeded = {"jobId": "j", "state": "succeeded", "attempt": 1, "outputUri": "file:///out/j/index.m3u8",
                 "updatedAt": "2026-01-01T00:00:05.000Z"}
    events = [*running, succeeded_status(completion), succeeded]
    backend = KafkaBackend(broker, topics, (tmp_path / "out").as_uri())
    try:
        for order in itertools.permutations(range(len(events))):
            backend._statuses.clear()
            for i in order:
                backend._remember(dict(events[i]))
            status = backend.status("j")
            assert status["state"] == "succeeded", order
            assert status["segment"]["index"] == 2 and [s["index"] for s in status["segments"]] == [0, 1, 2], order
    finally:
        backend.close()
