"""docker-compose.yml, the Prometheus scrape config and the Grafana dashboard agree with each other and with
the worker (topics, ports, metric names). `docker compose config` runs too where the compose client exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from worker import metrics
from worker.settings import Topics

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_services_and_references():
    assert {"kafka", "kafka-init", "worker", "api", "prometheus", "grafana", "minio", "minio-init"} <= set(SERVICES)
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (REPO / host).exists(), f"{name} mounts missing {host}"
    assert (REPO / SERVICES["worker"].get("build", ".")).joinpath("Dockerfile").is_file()


def test_kafka_is_single_node_kraft_with_replication_factor_one():
    env = SERVICES["kafka"]["environment"]
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_DEFAULT_REPLICATION_FACTOR"):
        assert str(env[key]) == "1"


def test_topic_init_creates_the_worker_topics():
    from worker.fleet import lane_topics
    from worker.settings import SERVED_MODES

    topics = Topics()
    script = "\n".join(SERVICES["kafka-init"]["command"])
    created = set(re.findall(r"--topic (avatar\.[a-z.]+) ", script))
    lanes = re.search(r"for lane in ([^;]+); do\s+create --topic \"(\S+)\.\$\$lane\" --partitions (\d+)", script)
    created |= {f"{lanes[2]}.{lane}" for lane in lanes[1].split()}
    events = {topics.requested, topics.completed, topics.failed, topics.status, topics.dlq}
    assert created == events | {topics.workers} | set(lane_topics(topics.lane_prefix, SERVED_MODES))
    assert lanes[3] == re.search(r"--topic avatar\.render\.requested --partitions (\d+)", script)[1]
    for compacted in (topics.status, topics.workers):
        assert re.search(rf"--topic {re.escape(compacted)} .*cleanup\.policy=compact", script), compacted


def test_worker_env_is_valid_settings_and_matches_scrape_config():
    from worker.settings import WorkerSettings

    env = {k: str(v) for k, v in SERVICES["worker"]["environment"].items()}
    settings = WorkerSettings.from_env(env)
    assert settings.output_uri.startswith("s3://") and settings.s3_endpoint_url == "http://minio:9000"
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    sd = scrape["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == settings.metrics_port


def test_gateway_publishes_where_workers_consume_and_shares_their_uploads():
    from worker.security import SecurityPolicy

    api, worker = SERVICES["api"], SERVICES["worker"]
    api_env = {k: str(v) for k, v in api["environment"].items()}
    worker_env = {k: str(v) for k, v in worker["environment"].items()}
    assert api["image"] == worker["image"] and "--backend" in api["command"] and "kafka" in api["command"]
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "OUTPUT_URI", "S3_ENDPOINT_URL", "UPLOAD_DIR", "ALLOWED_INPUT_ROOTS"):
        assert api_env[key] == worker_env[key], key  # same topics, same output names, same readable files
    policy = SecurityPolicy.from_env(api_env)
    assert policy.upload_retention_seconds > 0

    def mounts(service):
        return {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    upload_dir = api_env["UPLOAD_DIR"]
    assert mounts(api)[upload_dir] == mounts(worker)[upload_dir] in COMPOSE["volumes"]
    port = int(api["command"][api["command"].index("--port") + 1])
    assert f"{port}:{port}" in api["ports"]
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]]
    assert f"api:{port}" in targets


def test_grafana_dashboard_queries_metrics_the_worker_exports():
    exported = {m._name for m in (metrics.RENDER_LATENCY, metrics.QUEUE_WAIT, metrics.STAGE, metrics.IN_PROGRESS,
                                 metrics.JOBS, metrics.RETRIES, metrics.DLQ, metrics.LAG, metrics.REBALANCES,
                                 metrics.ASSIGNED, metrics.ENGINE_AVAILABLE)}
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/avatar-renderer.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|total)$", "", n) for e in exprs for n in re.findall(r"avatar_[a-z_]+", e)}
    assert used <= {re.sub(r"_total$", "", n) for n in exported}, used
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in ("latency", "throughput", "failures", "lag", "in progress"):
        assert needed in titles
    assert any("0.99" in e and "mode" in e for e in exprs)
    provisioning = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/avatar-renderer.yml").read_text())
    mounted = dict(v.split(":")[:2][::-1] for v in SERVICES["grafana"]["volumes"])
    assert mounted[provisioning["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"


def test_docker_compose_config_when_the_client_exists():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose client here; the YAML checks above stand in for it")
    result = subprocess.run([docker, "compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_image_copies_every_package_the_project_installs():
    """The Dockerfile copies folders one by one: a new top-level package must be copied too, or the image's
    `avatar-renderer` fails to import it."""
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    copied = set(re.findall(r"^COPY (\w+) \1$", (REPO / "Dockerfile").read_text(), flags=re.M))
    assert set(packages) <= copied, f"Dockerfile does not copy {sorted(set(packages) - copied)}"
