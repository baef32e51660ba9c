"""The worker against the real embedded broker: a request becomes a playable MP4 and a completion event; bad
records go to the DLQ with their reason while the worker keeps going; transient storage failures are retried;
a request past its deadline fails fast."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av

from conftest import job_ids_in, read_topic, worker_env
from cli.submit import build_request, publish


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def metric(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def request_for(clips: Path, **extra) -> dict:
    return build_request(str(clips / "portrait.jpg"), str(clips / "short.wav"), "real_time", size=128, **extra)


def test_request_to_playable_output_with_events_and_metrics(broker, topics, clips, tmp_path, start_worker):
    out_dir = tmp_path / "renders"
    worker = start_worker(worker_env(broker, topics, clips, out_dir))
    before = scrape(worker.metrics_url)
    request = request_for(clips, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    publish(broker, topics, request)

    done = read_topic(broker, topics.completed, until=lambda r: request["jobId"] in job_ids_in(r), timeout=90)
    completion = next(r for r in done if r["value"]["jobId"] == request["jobId"])
    event, headers = completion["value"], completion["headers"]
    assert event["engine"] == "landmark-warp" and event["mode"] == "real_time" and event["attempt"] == 1
    details = dict(event["engineDetails"])
    assert details.pop("why").startswith("using the built-in weightless engine landmark-warp: ")  # and why
    assert details == {"device": "cpu", "precision": "none", "backend": "numpy+opencv", "batchSize": 1,
                       "checkpoints": {}}
    assert event["outputUri"] == (out_dir.resolve() / f"{request['jobId']}.mp4").as_uri()
    assert headers["ce_type"] == "avatar.render.completed.v1" and headers["ce_specversion"] == "1.0"
    assert headers["content-type"] == "application/json" and headers["ce_subject"] == request["jobId"]
    assert headers["traceparent"] == request["traceparent"]
    assert {"ce_id", "ce_source", "ce_time"} <= set(headers)

    output = out_dir / f"{request['jobId']}.mp4"
    assert output.stat().st_size == event["bytes"]
    import hashlib

    assert hashlib.sha256(output.read_bytes()).hexdigest() == event["sha256"]
    with av.open(str(output)) as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
        assert codecs == {"video": "h264", "audio": "aac"}
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == event["frames"] >= 25

    statuses = read_topic(broker, topics.status, until=lambda r: any(
        x["value"].get("state") == "succeeded" and x["key"] == request["jobId"] for x in r), timeout=30)
    states = [r["value"]["state"] for r in statuses if r["key"] == request["jobId"]]
    assert states[0] == "queued" and "running" in states and states[-1] == "succeeded"

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(worker.metrics_url)
        if metric(after, 'avatar_jobs_total{outcome="succeeded"}') > metric(before, 'avatar_jobs_total{outcome="succeeded"}'):
            break
        time.sleep(0.2)
    assert metric(after, 'avatar_jobs_total{outcome="succeeded"}') - metric(before, 'avatar_jobs_total{outcome="succeeded"}') == 1
    count = 'avatar_render_duration_seconds_count{engine="landmark-warp",mode="real_time",outcome="succeeded"}'
    assert after.get(count, 0) - before.get(count, 0) == 1
    assert metric(after, "avatar_queue_wait_seconds_count") > metric(before, "avatar_queue_wait_seconds_count")
    assert metric(after, 'avatar_stage_duration_seconds_count{stage="upload"}') > metric(before, 'avatar_stage_duration_seconds_count{stage="upload"}')
    assert after["avatar_jobs_in_progress"] == 0
    assert metric(after, "avatar_rebalances_total") >= 1
    assert urllib.request.urlopen(worker.metrics_url + "/readyz", timeout=5).status == 200
    assert urllib.request.urlopen(worker.metrics_url + "/healthz", timeout=5).status == 200
    worker.stop()


def test_bad_records_go_to_the_dlq_and_the_worker_keeps_going(broker, topics, clips, tmp_path, start_worker):
    start_worker(worker_env(broker, topics, clips, tmp_path / "renders"))
    unknown_mode = {**request_for(clips), "qualityMode": "ultra"}
    with_output = {**request_for(clips), "outputPath": "/etc/passwd"}
    outside_root = build_request("/etc/hostname", str(clips / "short.wav"), "real_time", size=128)
    publish(broker, topics, {"jobId": "not-json"}, raw=b"{this is not json")
    publish(broker, topics, unknown_mode, raw=json.dumps(unknown_mode).encode())
    publish(broker, topics, with_output, raw=json.dumps(with_output).encode())
    publish(broker, topics, outside_root)
    good = request_for(clips)
    publish(broker, topics, good)

    dlq = read_topic(broker, topics.dlq, until=lambda r: len(r) >= 4, timeout=90)
    assert len(dlq) == 4
    by_code = {r["headers"]["dlq_error_code"]: r for r in dlq}
    assert set(by_code) == {"malformed_json", "schema_violation", "path_not_allowed"}
    reasons = [r["headers"]["dlq_error_message"] for r in dlq if r["headers"]["dlq_error_code"] == "schema_violation"]
    assert any("qualityMode" in m and "ultra" in m for m in reasons)
    assert any("outputPath" in m for m in reasons)
    malformed = by_code["malformed_json"]
    assert malformed["value"] == b"{this is not json"  # the original record, untouched
    assert malformed["headers"]["dlq_origin_topic"] == topics.requested
    assert int(malformed["headers"]["dlq_origin_offset"]) >= 0 and "dlq_origin_partition" in malformed["headers"]
    assert malformed["headers"]["dlq_error_class"] == "MalformedJson" and malformed["headers"]["dlq_attempts"] == "1"

    failed = read_topic(broker, topics.failed, until=lambda r: len(r) >= 4, timeout=30)
    codes = {r["value"]["jobId"]: r["value"]["code"] for r in failed}
    assert codes[unknown_mode["jobId"]] == "schema_violation" and codes[outside_root["jobId"]] == "path_not_allowed"
    assert all(r["value"]["retryable"] is False for r in failed)

    done = read_topic(broker, topics.completed, until=lambda r: good["jobId"] in job_ids_in(r), timeout=60)
    assert good["jobId"] in job_ids_in(done)


def test_transient_storage_failure_is_retried_to_success(broker, topics, clips, tmp_path, start_worker):
    blocked = tmp_path / "renders"
    blocked.write_text("a file where the output directory should be")  # mkdir fails: a real storage error
    worker = start_worker(worker_env(broker, topics, clips, blocked, MAX_ATTEMPTS=6, RETRY_BACKOFF_SECONDS=0.5))
    request = request_for(clips)
    # The counter is process-wide (other in-process tests may have counted storage retries): wait for an increase.
    retries = 'avatar_job_retries_total{code="storage_failed"}'
    before = scrape(worker.metrics_url).get(retries, 0)
    publish(broker, topics, request)
    deadline = time.monotonic() + 60
    while scrape(worker.metrics_url).get(retries, 0) < before + 1:
        assert time.monotonic() < deadline, "no storage retry happened"
        time.sleep(0.1)
    blocked.unlink()  # the "outage" ends
    done = read_topic(broker, topics.completed, until=lambda r: request["jobId"] in job_ids_in(r), timeout=60)
    event = next(r["value"] for r in done if r["value"]["jobId"] == request["jobId"])
    assert event["attempt"] >= 2
    assert (blocked / f"{request['jobId']}.mp4").stat().st_size == event["bytes"]
    assert read_topic(broker, topics.dlq, timeout=1) == []


def test_request_past_its_deadline_fails_fast(broker, topics, clips, tmp_path, start_worker):
    start_worker(worker_env(broker, topics, clips, tmp_path / "renders"))
    past = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    request = request_for(clips, deadline=past, idempotencyKey="late-one")
    publish(broker, topics, request)
    failed = read_topic(broker, topics.failed, until=lambda r: request["jobId"] in job_ids_in(r), timeout=60)
    event = next(r["value"] for r in failed if r["value"]["jobId"] == request["jobId"])
    assert event["code"] == "deadline_exceeded" and event["retryable"] is False
    assert event["idempotencyKey"] == "late-one"
    assert not (tmp_path / "renders" / f"{request['jobId']}.mp4").exists()
