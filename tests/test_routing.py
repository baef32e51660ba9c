"""Fleet routing (README "Routing a fleet"): lanes, priorities, the fleet view, and two pools on the real broker.

The two-pool test runs a CPU-only pool (DEFAULT_QUALITY_MODE=real_time) and a pool that *pretends* to have a GPU
and the high_quality checkpoints: its engine registry is built with Hardware(cuda=True), the three checkpoint
files exist (empty), and its high_quality engine is a stand-in that renders with the built-in landmark-warp
engine under the hood (the real FOMM -> Diff2Lip -> GFPGAN chain needs minutes a second on a CPU). Everything
else is real: the embedded Tansu broker, both workers' consumers, routers and heartbeats, the REST gateway over
HTTP, and the MP4s decoded back with PyAV.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path

import av
import httpx
import pytest

from cli.submit import build_request, publish
from conftest import InProcessWorker, job_ids_in, read_topic, worker_env
from schemas.errors import InvalidParameter, NoLivePool
from worker.fleet import Fleet, LanePicker, heartbeat, lane_topics, parse_lane, priority_class, Capabilities

# ----------------------------------------------------------------------------- units


def test_priorities_map_onto_three_lanes_per_mode():
    assert [priority_class(p) for p in range(10)] == ["bulk"] * 3 + ["normal"] * 4 + ["urgent"] * 3
    lanes = lane_topics("x.lane", ("real_time", "high_quality"))
    assert lanes[:2] == ["x.lane.real_time.urgent", "x.lane.high_quality.urgent"] and len(lanes) == 6
    assert parse_lane("x.lane", "x.lane.high_quality.bulk") == ("high_quality", "bulk")
    assert parse_lane("x.lane", "x.requested") is None and parse_lane("x.lane", "x.lane.auto.urgent") is None


def _beat(worker_id: str, modes: tuple[str, ...], engines=(), interval: float = 1.0) -> bytes:
    caps = Capabilities(pool="+".join(modes), modes=modes, engines=tuple(engines))
    return json.dumps(heartbeat(worker_id, caps, interval, {"inFlight": 0})).encode()


def test_the_fleet_resolves_auto_against_live_workers_only():
    fleet = Fleet()
    fleet.update(b"rt-1", _beat("rt-1", ("real_time",), [{"name": "landmark-warp", "mode": "real_time",
                                                            "available": True}], interval=10.0))
    assert fleet.resolve("auto", None) == "real_time" and fleet.resolve(None, None) == "real_time"
    with pytest.raises(NoLivePool, match="high_quality.*real_time: 1 live worker"):
        fleet.resolve("high_quality", None)
    hq_beat = _beat("hq-1", ("high_quality",), [{"name": "high-quality", "mode": "high_quality", "available": True}])
    fleet.update(b"hq-1", hq_beat)
    assert fleet.resolve("auto", None) == "high_quality" and fleet.resolve("real_time", None) == "real_time"
    assert fleet.resolve(None, "high-quality") == "high_quality"
    with pytest.raises(InvalidParameter):
        fleet.resolve("real_time", "high-quality")
    with pytest.raises(NoLivePool, match="no live worker has it"):
        fleet.resolve(None, "wav2lip")
    # Three heartbeat intervals later without a heartbeat, hq-1 no longer counts; a tombstone removes at once.
    sent = datetime.fromisoformat(json.loads(hq_beat)["sentAt"].replace("Z", "+00:00")).timestamp()
    assert fleet.resolve("auto", None, now=sent + 2.5) == "high_quality"
    assert fleet.resolve("auto", None, now=sent + 3.5) == "real_time"
    fleet.update(b"hq-1", None)
    assert fleet.resolve("auto", None) == "real_time"
    fleet.update(b"junk", b"{not json")  # ignored
    assert len(fleet.live()) == 1


def test_urgent_goes_first_but_bulk_is_never_starved():
    picker = LanePicker(max_skips=3)
    taken = []
    for _ in range(12):  # every lane always has work waiting
        lane = picker.order({"urgent", "normal", "bulk"})[0]
        picker.took(lane, {"urgent", "normal", "bulk"})
        taken.append(lane)
    assert taken[0] == "urgent" and taken.count("urgent") >= 6
    assert "bulk" in taken[:5] and "normal" in taken[:5]  # each waits at most 3 picks
    only_bulk = LanePicker(max_skips=3)
    assert only_bulk.order({"bulk"}) == ["bulk"]


def test_pool_settings_and_fleet_topic_names():
    from engines.settings import SettingsError
    from worker.settings import Topics, WorkerSettings

    topics = Topics("t1.requested", "t1.completed", "t1.failed", "t1.status", "t1.dlq")
    assert (topics.workers, topics.lane_prefix) == ("t1.workers", "t1.lane")
    assert Topics().workers == "avatar.render.workers" and Topics().lane_prefix == "avatar.render.lane"
    settings = WorkerSettings.from_env({"WORKER_MODES": "high_quality, real_time", "WORKER_POOL": "gpu",
                                        "HEARTBEAT_SECONDS": "2", "LANE_MAX_SKIPS": "0",
                                        "TOPIC_LANE_PREFIX": "fleet.lane."})
    assert settings.modes == ("high_quality", "real_time") and settings.pool == "gpu"
    assert settings.heartbeat_seconds == 2 and settings.lane_max_skips == 0
    assert settings.topics.lane_prefix == "fleet.lane"
    for env, named in (({"WORKER_MODES": "auto"}, "WORKER_MODES"), ({"HEARTBEAT_SECONDS": "0"}, "HEARTBEAT_SECONDS"),
                       ({"TOPIC_WORKERS": "avatar.render.dlq"}, "TOPIC_WORKERS")):
        with pytest.raises(SettingsError, match=named):
            WorkerSettings.from_env(env)


def test_a_worker_serves_only_modes_this_machine_can_render(tmp_path):
    from engines.hardware import Hardware
    from engines.registry import EngineRegistry
    from engines.settings import SettingsError
    from worker.fleet import local_capabilities
    from worker.settings import WorkerSettings

    def capabilities(**env):
        settings = WorkerSettings.from_env({"MODEL_ROOT": str(tmp_path / "none"), **env})
        return local_capabilities(settings, EngineRegistry(settings.models, Hardware(cuda=False)))

    cpu = capabilities()  # DEFAULT_QUALITY_MODE=auto: what it can render
    assert cpu.modes == ("real_time",) and cpu.pool == "real_time" and cpu.gpu is False
    assert {"name": "landmark-warp", "mode": "real_time", "available": True} in cpu.engines
    with pytest.raises(SettingsError, match="DEFAULT_QUALITY_MODE=high_quality.*high_quality"):
        capabilities(DEFAULT_QUALITY_MODE="high_quality")
    with pytest.raises(SettingsError, match="WORKER_MODES=high_quality"):
        capabilities(WORKER_MODES="high_quality")
    settings = WorkerSettings.from_env({"MODEL_ROOT": str(tmp_path / "m"), "WORKER_MODES": "high_quality"})
    hq = local_capabilities(settings, _stand_in_registry(settings.models, tmp_path))
    assert hq.modes == ("high_quality",) and hq.gpu is True and hq.checkpoints["fomm"] is True


def test_the_worker_command_refuses_a_mode_it_cannot_render_in_one_line(broker, topics, clips, tmp_path):
    import subprocess

    from conftest import CLI, REPO

    env = worker_env(broker, topics, clips, tmp_path / "renders", DEFAULT_QUALITY_MODE="high_quality",
                     MODEL_ROOT=str(tmp_path / "models"), WORK_DIR=str(tmp_path / "work"))
    done = subprocess.run([str(CLI), "worker"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert any("DEFAULT_QUALITY_MODE=high_quality" in line and "high_quality" in line for line in lines), lines
    assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- two pools on the broker


def _stand_in_registry(models, tmp_path: Path):
    """An engine registry that believes it has a GPU and the HQ checkpoints, with a high_quality engine that
    renders with the built-in engine (see the module docstring)."""
    from engines.hardware import Hardware
    from engines.landmark_warp import LandmarkWarpEngine
    from engines.registry import EngineRegistry

    class StandInHighQuality(LandmarkWarpEngine):
        name = "hq-stand-in"
        mode = "high_quality"

    for path in (models.fomm_ckpt_dir / "vox-cpk.pth.tar", models.diff2lip_ckpt_dir / "checkpoint.pt",
                 models.gfpgan_ckpt):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    hardware = Hardware(cuda=True)
    return EngineRegistry(models, hardware, engines=[LandmarkWarpEngine(models, hardware),
                                                     StandInHighQuality(models, hardware)])


class HqWorker(InProcessWorker):
    """The pretend-GPU pool's worker (in-process, with the stand-in registry)."""

    def __init__(self, env: dict[str, str], tmp_path: Path):
        import threading

        from worker import metrics
        from worker.consumer import Worker
        from worker.fleet import local_capabilities
        from worker.job_step import pipeline_render
        from worker.settings import WorkerSettings

        self.settings = WorkerSettings.from_env(env)
        registry = _stand_in_registry(self.settings.models, tmp_path)
        self.worker = Worker(self.settings, render=pipeline_render(self.settings.models, registry),
                             capabilities=local_capabilities(self.settings, registry))
        self.server = metrics.serve("127.0.0.1", 0, self.worker.health)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()


class HeldRender:
    """The worker's own render, told to hold the next job it starts until the test releases it.

    It lets a test fill the worker's queue behind one running job whatever the machine's speed."""

    def __init__(self, models):
        import threading

        from worker.job_step import pipeline_render

        self.render = pipeline_render(models)
        self.armed = threading.Event()  # the next render call holds
        self.holding = threading.Event()  # a render call is held now
        self.release = threading.Event()

    def hold_next(self) -> None:
        self.release.clear()
        self.holding.clear()
        self.armed.set()

    def __call__(self, request):
        if self.armed.is_set():
            self.armed.clear()
            self.holding.set()
            self.release.wait(120)  # bounded: a test that never releases fails on its own waits, not here
        return self.render(request)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _completions(broker, topics, ids: set[str], timeout: float = 120) -> dict[str, dict]:
    done = read_topic(broker, topics.completed, until=lambda r: ids <= job_ids_in(r), timeout=timeout)
    assert ids <= job_ids_in(done), f"missing completions: {ids - job_ids_in(done)}"
    return {r["value"]["jobId"]: r["value"] for r in done if r["value"]["jobId"] in ids}


def _playable(uri: str) -> int:
    with av.open(uri.removeprefix("file://")) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
def test_two_pools_hq_jobs_reach_only_the_hq_pool_auto_follows_the_fleet_urgent_overtakes_bulk(
        broker, topics, clips, tmp_path, start_worker):
    from gateway.kafka_backend import KafkaBackend
    from gateway.rest import create_app
    from http_server import serve
    from worker.security import SecurityPolicy
    from worker.settings import WorkerSettings

    out = tmp_path / "renders"
    # Heartbeats every 2 s: a worker stays live for 6 s without one, so a busy 2-core machine never drops a pool
    # by mistake; the HQ pool's departure below is seen from its tombstone at once, not by expiry.
    common = {"HEARTBEAT_SECONDS": "2", "WORKER_WARMUP": "0", "LANE_MAX_SKIPS": "4"}
    cpu_env = worker_env(broker, topics, clips, out, DEFAULT_QUALITY_MODE="real_time", WORKER_POOL="cpu",
                         WORKER_ID="cpu-1", **common)
    hq_env = worker_env(broker, topics, clips, out, WORKER_MODES="high_quality", WORKER_POOL="gpu-hq",
                        WORKER_ID="hq-1", MODEL_ROOT=str(tmp_path / "models"), WORK_DIR=str(tmp_path / "hq-work"),
                        **common)
    held = HeldRender(WorkerSettings.from_env(cpu_env).models)
    cpu = start_worker(cpu_env, render=held)
    hq = HqWorker(hq_env, tmp_path)
    try:
        backend = KafkaBackend(broker, topics, out.resolve().as_uri())
        assert backend.wait_until_following(30)
        _wait(lambda: {b["workerId"] for b in backend.fleet.live()} == {"cpu-1", "hq-1"}, 30,
              "the gateway to see both pools")
        _wait(lambda: cpu.worker.health.ready and hq.worker.health.ready, 60, "both workers to join")
        assert {b["pool"]: b["modes"] for b in backend.fleet.live()} == {"cpu": ["real_time"],
                                                                         "gpu-hq": ["high_quality"]}

        # HQ jobs reach only the HQ pool; auto follows the fleet (HQ is live); real_time goes to the CPU pool.
        face, short = str(clips / "portrait.jpg"), str(clips / "short.wav")
        jobs = {"hq": build_request(face, short, "high_quality", size=128),
                "auto": build_request(face, short, "auto", size=128),
                "rt": build_request(face, short, "real_time", size=128)}
        for request in jobs.values():
            publish(broker, topics, request)
        done = _completions(broker, topics, {r["jobId"] for r in jobs.values()})
        by_kind = {kind: done[r["jobId"]] for kind, r in jobs.items()}
        assert (by_kind["hq"]["workerId"], by_kind["hq"]["mode"], by_kind["hq"]["engine"]) == \
            ("hq-1", "high_quality", "hq-stand-in")
        assert (by_kind["auto"]["workerId"], by_kind["auto"]["mode"], by_kind["auto"]["requestedMode"]) == \
            ("hq-1", "high_quality", "auto")
        assert (by_kind["rt"]["workerId"], by_kind["rt"]["mode"]) == ("cpu-1", "real_time")
        assert all(_playable(e["outputUri"]) == e["frames"] for e in by_kind.values())
        hq_lane = read_topic(broker, f"{topics.lane_prefix}.high_quality.normal",
                             until=lambda r: len(r) >= 2, timeout=10)
        assert {r["key"] for r in hq_lane} == {jobs["hq"]["jobId"], jobs["auto"]["jobId"]}
        assert {r["headers"]["route_requested_mode"] for r in hq_lane} == {"high_quality", "auto"}
        assert {r["headers"]["route_mode"] for r in hq_lane} == {"high_quality"}
        assert {r["value"]["qualityMode"] for r in hq_lane} == {"high_quality", "auto"}  # the publisher's bytes

        # The HQ pool goes away (drained: its tombstone removes it at once).
        hq.stop()
        _wait(lambda: {b["workerId"] for b in backend.fleet.live()} == {"cpu-1"}, 10, "the gateway to drop hq-1")

        # A job nobody can serve is refused up front: the REST gateway answers 409 without queueing it ...
        policy = SecurityPolicy.from_env(cpu_env)
        with serve(create_app(backend, policy)) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            refused = client.post("/render", json={"avatarPath": "portrait.jpg", "audioPath": "short.wav",
                                                   "qualityMode": "high_quality", "size": 128})
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "no_live_pool"
            assert "real_time: 1 live worker" in refused.json()["error"]["message"]
        # ... and one published straight to the topic is failed by the router at once, with the reason.
        unservable = build_request(face, short, "high_quality", size=128)
        auto_now = build_request(face, short, "auto", size=128)
        started = time.monotonic()
        publish(broker, topics, unservable)
        failed = read_topic(broker, topics.failed, timeout=30,
                            until=lambda r: unservable["jobId"] in job_ids_in(r))
        event = next(r["value"] for r in failed if r["value"]["jobId"] == unservable["jobId"])
        assert event["code"] == "no_live_pool" and "high_quality" in event["message"]
        assert time.monotonic() - started < 20  # at once: a rebalance, not attempts with backoff
        dlq = read_topic(broker, topics.dlq, timeout=10, until=lambda r: any(
            x["headers"].get("dlq_error_code") == "no_live_pool" for x in r))
        assert any(x["key"] == unservable["jobId"] for x in dlq)
        # auto now means real_time: the fleet has only the CPU pool.
        publish(broker, topics, auto_now)
        event = _completions(broker, topics, {auto_now["jobId"]})[auto_now["jobId"]]
        assert (event["workerId"], event["mode"], event["requestedMode"]) == ("cpu-1", "real_time", "auto")

        # Urgent overtakes queued bulk: the CPU worker's one slot is held on the first of six bulk jobs until the
        # other five are queued in the worker and the urgent job has arrived behind them; released, the urgent
        # job is the next to start. (Timing it instead raced the machine: a quick one rendered the bulk jobs as
        # fast as they arrived.)
        held.hold_next()
        bulk = [build_request(face, short, "real_time", size=128, priority=0) for _ in range(6)]
        urgent = build_request(face, short, "real_time", size=128, priority=9)
        from worker.kafka import request_producer

        producer = request_producer(broker, "routing-test")
        for request in bulk:
            publish(broker, topics, request, producer=producer)
        bulk_ids = {b["jobId"] for b in bulk}

        def queued_in_the_worker(lane: str) -> int:  # read from the test thread: retried if the dict changes
            try:
                return sum(r.state == "queued" for tp, backlog in list(cpu.worker.records.items())
                           if tp[0].endswith(f".{lane}") for r in list(backlog))
            except RuntimeError:
                return 0

        _wait(lambda: held.holding.is_set() and queued_in_the_worker("bulk") == 5, 60,
              "one bulk job to render (held) and five to queue behind it")
        publish(broker, topics, urgent, producer=producer)
        _wait(lambda: queued_in_the_worker("urgent") == 1, 60, "the urgent job to reach the worker")
        held.release.set()
        ids = bulk_ids | {urgent["jobId"]}
        done = read_topic(broker, topics.completed, until=lambda r: ids <= job_ids_in(r), timeout=120)
        completions = [r["value"]["jobId"] for r in done if r["value"]["jobId"] in ids]
        assert sorted(completions) == sorted(ids)  # every bulk job finished too, once
        statuses = read_topic(broker, topics.status, timeout=10, until=lambda r: sum(
            x["key"] in ids and x["value"]["state"] == "running" for x in r) >= len(ids))
        starts = [x["key"] for x in sorted(statuses, key=lambda x: x["value"]["updatedAt"])
                  if x["key"] in ids and x["value"]["state"] == "running"]
        # The held bulk job started first; the urgent one came next, ahead of the five bulk jobs queued before it.
        assert starts[0] in bulk_ids and starts[1] == urgent["jobId"], starts
        assert set(starts[2:]) == bulk_ids - {starts[0]}, starts
        backend.close()
    finally:
        if hq.thread.is_alive():
            hq.stop()
