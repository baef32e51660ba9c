"""The fleet: what each worker serves (heartbeats), the lanes, and routing a request to the lane that serves it.

Every worker announces itself on the compacted workers topic (key: its WORKER_ID) every HEARTBEAT_SECONDS:
its pool, the modes it serves, its engines, GPU, checkpoints and load. A worker is live for three of its own
heartbeats after the last one (a clean stop sends a tombstone at once). `Fleet` is the view built from those
records, used by the router role of every worker and by the gateways' Kafka backend to refuse, before
queueing, a job no live pool serves.

A lane is a topic `<TOPIC_LANE_PREFIX>.<mode>.<priority>`: mode real_time or high_quality (auto is resolved
once, by the router, against the fleet), priority urgent (request priority 7-9), normal (3-6) or bulk (0-2).
`LanePicker` is how a worker chooses its next job among the lanes it consumes: urgent first, but a waiting
lower lane is passed over at most LANE_MAX_SKIPS times in a row, so bulk work is slowed, never starved.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from schemas.errors import EngineUnavailable, InvalidParameter, NoLivePool, SettingsError
from schemas.events import now_iso

from .settings import SERVED_MODES, WorkerSettings

PRIORITIES = ("urgent", "normal", "bulk")  # best first
LIVE_HEARTBEATS = 3  # a worker is live until this many of its heartbeat intervals pass without one


def priority_class(priority: int) -> str:
    """render.requested.v1 `priority` (0 lowest .. 9 highest, default 5) -> its lane's priority."""
    if priority >= 7:
        return "urgent"
    if priority <= 2:
        return "bulk"
    return "normal"


def lane_topic(prefix: str, mode: str, priority: str) -> str:
    return f"{prefix}.{mode}.{priority}"


def lane_topics(prefix: str, modes) -> list[str]:
    """Every lane of `modes`, best priority first."""
    return [lane_topic(prefix, mode, priority) for priority in PRIORITIES for mode in modes]


def parse_lane(prefix: str, topic: str) -> tuple[str, str] | None:
    """(mode, priority) of a lane topic, None for any other topic."""
    if not topic.startswith(prefix + "."):
        return None
    mode, _, priority = topic[len(prefix) + 1:].rpartition(".")
    return (mode, priority) if mode in SERVED_MODES and priority in PRIORITIES else None


# ----------------------------------------------------------------------------- what one worker serves

@dataclass(frozen=True)
class Capabilities:
    pool: str
    modes: tuple[str, ...]  # the lanes' modes this worker consumes
    engines: tuple[dict, ...] = ()  # {"name", "mode", "available"}
    gpu: bool = False
    checkpoints: dict = field(default_factory=dict)  # model name -> present


def servable_modes(registry) -> dict[str, str | None]:
    """Each served mode -> None when this machine can render it, else why not (the registry's own words)."""
    reasons: dict[str, str | None] = {}
    for mode in SERVED_MODES:
        try:
            registry.resolve(mode, None)
            reasons[mode] = None
        except EngineUnavailable as exc:
            reasons[mode] = exc.message
    return reasons


def local_capabilities(settings: WorkerSettings, registry) -> Capabilities:
    """What this worker announces and consumes: WORKER_MODES, else DEFAULT_QUALITY_MODE (real_time or
    high_quality: that mode; auto: every mode this machine can render). A mode asked for that this machine
    cannot render stops the worker (SettingsError naming the setting and what is missing)."""
    default = settings.models.default_quality_mode
    can = servable_modes(registry)
    if settings.modes:
        wanted, setting = settings.modes, f"WORKER_MODES={','.join(settings.modes)}"
    elif default in SERVED_MODES:
        wanted, setting = (default,), f"DEFAULT_QUALITY_MODE={default}"
    else:
        wanted, setting = tuple(m for m in SERVED_MODES if can[m] is None), None
    for mode in wanted:
        if can[mode] is not None:
            raise SettingsError(f"{setting} asks this worker to serve {mode}, which it cannot render: {can[mode]}")
    if not wanted:
        raise SettingsError("This worker can render no mode (DEFAULT_QUALITY_MODE=auto found none).")
    models = settings.models
    checkpoints = {}
    for name, attr in (("wav2lip", "wav2lip_ckpt"), ("gfpgan", "gfpgan_ckpt"), ("fomm", "fomm_ckpt_dir"),
                       ("diff2lip", "diff2lip_ckpt_dir"), ("sadtalker", "sadtalker_ckpt_dir")):
        path = getattr(models, attr, None)
        if path is not None:
            checkpoints[name] = path.is_file() or (path.is_dir() and any(path.iterdir()))
    engines = tuple({"name": e.name, "mode": e.mode, "available": bool(e.availability().ok)}
                    for e in registry.engines.values())
    return Capabilities(pool=settings.pool or "+".join(wanted), modes=tuple(wanted), engines=engines,
                        gpu=bool(registry.hardware.cuda), checkpoints=checkpoints)


def heartbeat(worker_id: str, caps: Capabilities, interval: float, load: dict) -> dict:
    """The record a worker publishes on the workers topic (key: worker_id)."""
    return {"workerId": worker_id, "pool": caps.pool, "modes": list(caps.modes), "engines": list(caps.engines),
            "gpu": caps.gpu, "checkpoints": caps.checkpoints, "load": load, "heartbeatSeconds": interval,
            "sentAt": now_iso()}


# ----------------------------------------------------------------------------- the fleet seen from here

class Fleet:
    """The latest heartbeat of every worker (thread-safe); resolves a request's mode against the live ones."""

    def __init__(self):
        self._lock = threading.Lock()
        self._workers: dict[str, tuple[float, dict]] = {}  # workerId -> (live until, epoch s; heartbeat)
        self.seen_any = False

    def update(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the workers topic; a tombstone (no value) removes the worker; junk is ignored."""
        if not key:
            return
        worker_id = key.decode("utf-8", "replace")
        if value is None:
            with self._lock:
                self._workers.pop(worker_id, None)
            return
        try:
            beat = json.loads(value)
            sent = datetime.fromisoformat(beat["sentAt"].replace("Z", "+00:00")).timestamp()
            interval = float(beat.get("heartbeatSeconds", 5.0))
            modes = [m for m in beat.get("modes", []) if m in SERVED_MODES]
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        beat = {**beat, "modes": modes}
        with self._lock:
            known = self._workers.get(worker_id)
            if known is None or known[1].get("sentAt", "") <= beat["sentAt"]:
                self._workers[worker_id] = (sent + LIVE_HEARTBEATS * interval, beat)
            self.seen_any = True

    def live(self, now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        with self._lock:
            return [beat for until, beat in self._workers.values() if until >= now]

    def describe(self, now: float | None = None) -> str:
        """The live pools in a few words: `real_time: 2 workers (pool rt); high_quality: none`."""
        live = self.live(now)
        parts = []
        for mode in SERVED_MODES:
            serving = [b for b in live if mode in b["modes"]]
            pools = sorted({b.get("pool", "?") for b in serving})
            parts.append(f"{mode}: {len(serving)} live worker(s)" + (f" (pool {', '.join(pools)})" if pools else ""))
        return "; ".join(parts)

    def resolve(self, mode: str | None, engine: str | None, now: float | None = None) -> str:
        """The lane mode of a request: its mode, the named engine's mode, or for auto (and no mode) the best mode
        a live worker serves. NoLivePool (409) when no live worker serves it; InvalidParameter for an engine
        asked for with a mode it does not serve."""
        live = self.live(now)
        if engine:
            having = [b for b in live for e in b.get("engines", [])
                      if isinstance(e, dict) and e.get("name") == engine and e.get("mode") in b["modes"]]
            engine_mode = next((e["mode"] for b in live for e in b.get("engines", [])
                                if isinstance(e, dict) and e.get("name") == engine), None)
            if engine_mode and mode not in (None, "auto", engine_mode):
                raise InvalidParameter(f"Engine {engine} serves {engine_mode}, not {mode}; drop the engine or the mode.")
            ready = [b for b in having for e in b["engines"] if e.get("name") == engine and e.get("available")]
            if ready:
                return engine_mode
            raise NoLivePool(f"No live worker can run engine {engine} now ("
                             f"{'it is there but unavailable' if having else 'no live worker has it'}); "
                             f"the fleet: {self.describe(now)}.")
        wanted = [mode] if mode in SERVED_MODES else ["high_quality", "real_time"]  # auto: the best served
        for candidate in wanted:
            if any(candidate in b["modes"] for b in live):
                return candidate
        asked = mode if mode in SERVED_MODES else "auto (any mode)"
        raise NoLivePool(f"No live worker pool serves {asked} now; the fleet: {self.describe(now)}. "
                         "Submit it again when a pool serving it is up.")


# ----------------------------------------------------------------------------- choosing the next lane

class LanePicker:
    """Urgent first, without starving the rest: a lane with work waiting that has been passed over
    `max_skips` times in a row goes next (0: strict round-robin between lanes with work)."""

    def __init__(self, max_skips: int):
        self.max_skips = max_skips
        self.skips = {p: 0 for p in PRIORITIES}

    def order(self, waiting: set[str]) -> list[str]:
        """The lanes with work waiting, in the order to take them now."""
        ranked = [p for p in PRIORITIES if p in waiting]
        starved = [p for p in ranked if self.skips[p] >= self.max_skips]
        starved.sort(key=lambda p: -self.skips[p])
        return starved + [p for p in ranked if p not in starved]

    def took(self, taken: str, waiting: set[str]) -> None:
        """Count a pass-over for every other lane that had work waiting."""
        self.skips[taken] = 0
        for p in waiting:
            if p != taken:
                self.skips[p] += 1
