"""The job step's side of the broadcast formats (issue 12; engines/delivery.py): the request's delivery options
with the canvas background image fetched like the portrait, HLS segments stored and reported as each is
finished, and the finished output stored under a name with its own extension.

Object names, all derived from the job id (a redelivered job overwrites the same objects):
    mp4   <jobId>.mp4          webm  <jobId>.webm          mov  <jobId>.mov
    hls   <jobId>/index.m3u8, <jobId>/init.mp4, <jobId>/seg00000.m4s ..., and <jobId>/index.mp4 when asked for
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Callable

from engines.delivery import Delivery
from engines.hls import INIT_NAME, PLAYLIST_TYPE, SEGMENT_TYPE, Segment

from .inputs import IMAGE, fetch_input

log = logging.getLogger(__name__)

PLAYLIST_NAME = "index.m3u8"


def delivery_of(wire: dict | None) -> Delivery:
    """The request's delivery options (its output, canvas, loudness, hls keys); bad values: InvalidParameter."""
    return Delivery.from_wire(wire or {})


def with_local_background(delivery: Delivery, settings, scratch: Path) -> Delivery:
    """The delivery with its canvas background image fetched under the same rules as the portrait (allowed roots,
    allow-listed https, s3, size and format checks), as a local path the render reads."""
    canvas = delivery.canvas
    if canvas is None or not canvas.background_uri:
        return delivery
    path = fetch_input(canvas.background_uri, IMAGE, settings.inputs, scratch, settings.s3_endpoint_url)
    return dataclasses.replace(delivery, canvas=dataclasses.replace(canvas, background_uri=str(path)))


def output_name(job_id: str, delivery: Delivery) -> str:
    return f"{job_id}/{PLAYLIST_NAME}" if delivery.output == "hls" else f"{job_id}.{delivery.extension}"


class SegmentUploader:
    """engines.hls's on_segment for one job: stores the segment (the init segment with the first) and the playlist
    as it now stands, then reports {"playlistUri", "segment"}. Each event names its own segment only (a list of
    all so far in every event would grow the status traffic with the square of the segment count); the front
    doors' backends gather them into a status's `segments` (gateway/backends.py merge_segment)."""

    def __init__(self, storage, job_id: str, report: Callable[[dict], None]):
        self.storage, self.job_id, self.report = storage, job_id, report
        self.segments: list[dict] = []
        self.playlist_uri = storage.uri_of(f"{job_id}/{PLAYLIST_NAME}")
        self._lock = threading.Lock()

    def _put(self, path: Path, content_type: str):
        return self.storage.put_named(f"{self.job_id}/{path.name}", path, content_type, self.job_id)

    def __call__(self, segment: Segment) -> None:
        with self._lock:
            if segment.index == 0:
                self._put(segment.path.parent / INIT_NAME, "video/mp4")
            stored = self._put(segment.path, SEGMENT_TYPE)
            self._put(segment.path.parent / PLAYLIST_NAME, PLAYLIST_TYPE)
            entry = {"index": segment.index, "uri": stored.uri, "durationSeconds": round(segment.duration, 3),
                     "startSeconds": round(segment.start, 3)}
            self.segments.append(entry)
            progress = {"playlistUri": self.playlist_uri, "segment": entry}
        try:
            self.report(progress)
        except Exception:  # noqa: BLE001 - a progress event lost must not fail the render
            log.exception("segment event not published")


def store_output(storage, job_id: str, delivery: Delivery, result) -> tuple[object, dict]:
    """Store the finished output; returns (Stored of the main object, completion fields of this delivery)."""
    fields: dict = {"outputFormat": delivery.output}
    if getattr(result, "loudness", None):
        fields["loudness"] = result.loudness
    if delivery.output == "hls":
        playlist = Path(result.output)
        stored = storage.put_named(f"{job_id}/{PLAYLIST_NAME}", playlist, PLAYLIST_TYPE, job_id)  # with its end tag
        fields["segments"] = [{"index": s["index"], "uri": storage.uri_of(f"{job_id}/{s['name']}"),
                               "durationSeconds": s["durationSeconds"], "startSeconds": s["startSeconds"]}
                              for s in result.segments]
        if result.mp4_output:
            fields["mp4Uri"] = storage.put_named(f"{job_id}/{Path(result.mp4_output).name}",
                                                 Path(result.mp4_output), "video/mp4", job_id).uri
        return stored, fields
    if delivery.output == "mp4":
        return storage.put(job_id, Path(result.output)), fields
    return storage.put_named(output_name(job_id, delivery), Path(result.output), delivery.media_type, job_id), fields
