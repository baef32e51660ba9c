"""`make demo`: the main job end to end on one machine, from one command.

Starts the embedded broker (Tansu) and creates the topics, starts `avatar-renderer worker`, submits the
bundled portrait + speech as a render.requested.v1 event, prints the completion event, then stops the worker
(SIGTERM: drain, commit, leave the group) and the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .broker import create_topics, free_port, start_broker
from worker.settings import Topics
from .submit import ResultWatcher, build_request, publish
from engines import SAMPLES

REPO = Path(__file__).resolve().parent.parent


def main(out_dir: str = "out") -> int:
    out = (REPO / out_dir).resolve() if not Path(out_dir).is_absolute() else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topics = Topics()
    broker = start_broker(port, out / "demo-broker.log")
    worker = None
    try:
        create_topics(bootstrap, topics)
        print(f"broker: Tansu on {bootstrap} (topics created)", flush=True)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ALLOWED_INPUT_ROOTS": str(SAMPLES),
               "OUTPUT_URI": (out / "renders").as_uri(), "METRICS_PORT": "0", "METRICS_HOST": "127.0.0.1",
               "KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_MAX_POLL_INTERVAL_MS": "10000"}
        log_path = out / "demo-worker.log"
        worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=env, cwd=REPO,
                                  stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        print(f"worker: pid {worker.pid}, JSON logs in {log_path}", flush=True)
        watcher = ResultWatcher(bootstrap, topics)
        request = build_request(str(SAMPLES / "portrait.jpg"), str(SAMPLES / "speech.wav"), "auto")
        publish(bootstrap, topics, request)
        print(f"submitted: job {request['jobId']}", flush=True)
        results = watcher.wait({request["jobId"]}, timeout=180)
        watcher.close()
        if request["jobId"] not in results:
            print(f"error: no result within 180 s; see {log_path}", file=sys.stderr)
            return 1
        topic, event, headers = results[request["jobId"]]
        print(json.dumps({"topic": topic, "type": headers.get("ce_type"), "event": event}, indent=2), flush=True)
        return 0 if topic == topics.completed else 1
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(60)
                print(f"worker stopped (exit {code})", flush=True)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
        print("broker stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
