"""deploy/: compose, Kubernetes, Helm values, Dockerfiles and Prometheus parse, and name only
images, ports and environment variables the services really use."""

import importlib.util
import re
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from shared.settings import ApiSettings, MetricsSettings, SchedulerSettings, TrainerSettings
from tests.promtool import check_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES: dict[str, type[BaseSettings]] = {
    "api": ApiSettings, "scheduler": SchedulerSettings, "metrics": MetricsSettings, "trainer": TrainerSettings,
}
# The OpenTelemetry variables shared/telemetry.py's exporter set-up honours.
OTEL_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
                  "OTEL_RESOURCE_ATTRIBUTES"}
OTHER_KNOWN = {"PYTHONUNBUFFERED"}
NATS_USERS_RE = re.compile(r"\{ user: ([\w-]+), password: \$(\w+)")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def settings_variables(service: str) -> set[str]:
    return {f"TRAINYARD_{name.upper()}" for name in SERVICES[service].model_fields}


def assert_known_env(service: str, names: set[str], where: str, helpers: AbstractSet[str] = frozenset()) -> None:
    """Every variable is a setting of that service, an OpenTelemetry variable, or a helper another one uses."""
    unknown = names - settings_variables(service) - OTEL_VARIABLES - OTHER_KNOWN - helpers
    assert not unknown, f"{where}: {service} does not read {sorted(unknown)}"


def nats_accounts() -> dict[str, str]:
    """user -> the environment variable holding its password, from deploy/nats/accounts.conf."""
    return dict(NATS_USERS_RE.findall((DEPLOY / "nats" / "accounts.conf").read_text()))


# -- Dockerfiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_own_dockerfile_running_its_module(service: str) -> None:
    dockerfile = (DEPLOY / "docker" / f"{service}.Dockerfile").read_text()
    cmd = re.search(r'^CMD \["python", "-m", "([\w.]+)"\]', dockerfile, re.M)
    assert cmd and cmd.group(1) == f"services.{service}.main"
    assert importlib.util.find_spec(cmd.group(1)) is not None
    env_names = set(re.findall(r"\b(TRAINYARD_\w+|OTEL_\w+)=", dockerfile))
    assert_known_env(service, env_names, f"{service}.Dockerfile")
    for port in re.findall(r"^EXPOSE (\d+)", dockerfile, re.M):
        env = dict(re.findall(r"\b(TRAINYARD_\w*PORT)=(\d+)", dockerfile))
        assert port in env.values(), f"{service}.Dockerfile exposes {port} but serves on {env}"
    if service == "trainer":
        assert re.search(r"^ARG BASE=pytorch/pytorch:[\w.-]+cuda", dockerfile, re.M), "trainer needs a CUDA base"


# -- compose -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return loaded


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*SERVICES, "nats", "mongo", "prometheus", "tempo", "grafana"}
    assert "-js" in compose["services"]["nats"]["command"] or "/etc/nats/nats-server.conf" in str(
        compose["services"]["nats"]["command"])
    assert "jetstream" in (DEPLOY / "nats" / "nats-server.conf").read_text()
    mongo = compose["services"]["mongo"]
    assert "--replSet" in mongo["command"] and "rs.initiate" in str(mongo["healthcheck"]["test"])


def test_compose_variables_are_all_in_the_example_env(compose: dict[str, Any]) -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    defined = set(re.findall(r"^(\w+)=", (DEPLOY / "example.env").read_text(), re.M))
    assert used <= defined, sorted(used - defined)


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_uses_its_image_and_only_its_settings(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert spec["build"]["dockerfile"] == f"deploy/docker/{service}.Dockerfile"
    assert (DEPLOY / spec["build"]["context"] / spec["build"]["dockerfile"]).is_file()
    assert spec["image"].startswith(f"trainyard/{service}:")
    env: dict[str, str] = spec["environment"]
    assert_known_env(service, set(env), "compose.yaml")
    user = re.match(r"nats://([\w-]+):\$\{(\w+)\}@nats:4222$", env["TRAINYARD_NATS_URL"])
    # A trainer's NATS user is its trainer id: it may publish only under that id.
    expected = env["TRAINYARD_TRAINER_ID"] if service == "trainer" else service
    assert user and user.group(1) == expected, "each service connects as its own NATS user"
    assert nats_accounts()[expected] == user.group(2)
    if service != "trainer":
        assert env["TRAINYARD_MONGO_URL"].startswith("mongodb://mongo:27017/") and "replicaSet=rs0" in env[
            "TRAINYARD_MONGO_URL"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo:4318"


def test_compose_ports_match_what_services_serve_and_prometheus_scrapes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_port = services["api"]["environment"]["TRAINYARD_PORT"]
    assert services["api"]["ports"] == [f"{api_port}:{api_port}"]
    served = {"api": int(api_port)}
    for service in ("scheduler", "metrics", "trainer"):
        env = services[service]["environment"]
        assert env["TRAINYARD_METRICS_HOST"] == "0.0.0.0"
        served[service] = int(env["TRAINYARD_METRICS_PORT"])
    prometheus = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    scraped = {}
    for job in prometheus["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services, f"Prometheus job {job['job_name']} looks up {name}, no such service"
                scraped[name] = sd["port"]
    assert scraped == served


def test_compose_trainer_reserves_gpus_and_drains(compose: dict[str, Any]) -> None:
    trainer = compose["services"]["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    grace = re.fullmatch(r"(\d+)([sm])", trainer["stop_grace_period"])
    assert grace, "the trainer needs a stop grace period to drain"
    grace_s = int(grace.group(1)) * (60 if grace.group(2) == "m" else 1)
    assert float(trainer["environment"]["TRAINYARD_DRAIN_TIMEOUT_S"]) < grace_s
    work_root = trainer["environment"]["TRAINYARD_WORK_ROOT"]
    assert any(work_root.startswith(v.split(":")[1]) for v in trainer["volumes"])
    # The API validates datasets where trainers read them: the same volume at the same path.
    assert set(compose["services"]["api"]["volumes"]) <= set(trainer["volumes"])


def test_compose_mounts_and_volumes_exist(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        image = spec.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, f"{name}: pin the image"
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    nats_env = compose["services"]["nats"]["environment"]
    assert set(nats_accounts().values()) <= set(nats_env)


def test_compose_observability_stack_is_wired(compose: dict[str, Any]) -> None:
    tempo = _yaml(DEPLOY / "tempo" / "tempo.yaml")
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    grafana = compose["services"]["grafana"]
    provider = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "trainyard.yaml")["providers"][0]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "trainyard.yaml")["datasources"]
    urls = {d["uid"]: d.get("url") for d in datasources}
    assert urls["prometheus"] == "http://prometheus:9090" and urls["tempo"] == "http://tempo:3200"
    infinity = next(d for d in datasources if d["type"] == "yesoreyeram-infinity-datasource")
    assert infinity["jsonData"]["allowedHosts"] == [f"http://api:{compose['services']['api']['environment']['TRAINYARD_PORT']}"]
    assert "yesoreyeram-infinity-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]


def test_prometheus_config_passes_promtool() -> None:
    result = check_config(DEPLOY / "prometheus" / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout + result.stderr


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kustomization = _yaml(DEPLOY / "k8s" / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs.extend(_yaml_docs(DEPLOY / "k8s" / resource))
    return docs


@pytest.fixture(scope="module")
def secrets() -> dict[str, set[str]]:
    docs = _yaml_docs(DEPLOY / "k8s" / "secrets.example.yaml")
    return {doc["metadata"]["name"]: set(doc["stringData"]) for doc in docs}


def _workloads(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests if d["kind"] in ("Deployment", "StatefulSet")}


def test_every_k8s_file_is_in_the_kustomization_and_every_service_has_a_workload(
        manifests: list[dict[str, Any]]) -> None:
    listed = set(_yaml(DEPLOY / "k8s" / "kustomization.yaml")["resources"])
    present = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert listed == present
    assert set(_workloads(manifests)) == set(SERVICES)
    images = {i["name"] for i in _yaml(DEPLOY / "k8s" / "kustomization.yaml")["images"]}
    assert images == {f"trainyard/{s}" for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_workload_uses_its_image_settings_secrets_and_ports(
        manifests: list[dict[str, Any]], secrets: dict[str, set[str]], service: str) -> None:
    workload = _workloads(manifests)[service]
    pod = workload["spec"]["template"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"].split(":")[0] == f"trainyard/{service}"
    config = {d["metadata"]["name"]: d["data"] for d in manifests if d["kind"] == "ConfigMap"}
    names: list[str] = []
    for source in container.get("envFrom", []):
        names.extend(config[source["configMapRef"]["name"]])
    values: dict[str, str] = {}
    for var in container.get("env", []):
        # $(VAR) may only name a variable defined before it.
        for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
            assert ref in values, f"{service}: {var['name']} uses $({ref}) before it is defined"
        secret = var.get("valueFrom", {}).get("secretKeyRef")
        if secret:
            assert secret["key"] in secrets[secret["name"]], f"{service}: no key {secret['key']} in {secret['name']}"
        values[var["name"]] = var.get("value", "")
        names.append(var["name"])
    helpers = {ref for v in values.values() for ref in re.findall(r"\$\((\w+)\)", v)}
    assert_known_env(service, set(names), f"k8s {service}", helpers)
    if service == "trainer":
        # Its user is its pod name (the trainer id), its password that key of the mounted secret.
        command = " ".join(container["command"])
        assert 'nats://$TRAINYARD_TRAINER_ID:$(cat /etc/trainyard/nats/$TRAINYARD_TRAINER_ID)@nats.trainyard.svc:4222' \
            in command
        replicas = next(d for d in manifests if d["metadata"]["name"] == "trainer" and d["kind"] == "StatefulSet")
        pods = {f"trainer-{n}" for n in range(replicas["spec"]["replicas"])}
        assert pods <= set(nats_accounts()) and pods <= set(secrets["trainyard-nats-passwords"])
    else:
        user = re.match(r"nats://(\w+):\$\(NATS_PASSWORD\)@nats\.trainyard\.svc:4222$", values["TRAINYARD_NATS_URL"])
        assert user and user.group(1) == service and service in nats_accounts()

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port_setting = "TRAINYARD_PORT" if service == "api" else "TRAINYARD_METRICS_PORT"
    assert int(values[port_setting]) in ports.values()
    for probe in ("readinessProbe", "livenessProbe"):
        if probe in container:
            assert container[probe]["httpGet"]["port"] in ports
    for svc in (d for d in manifests if d["kind"] == "Service" and d["metadata"]["name"] == service):
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert all(p["targetPort"] in ports or p["targetPort"] in ports.values() for p in svc["spec"]["ports"])
    claims = {d["metadata"]["name"] for d in manifests if d["kind"] == "PersistentVolumeClaim"}
    for volume in pod["spec"].get("volumes", []):
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_k8s_trainers_run_on_gpu_nodes_and_drain_on_sigterm(manifests: list[dict[str, Any]]) -> None:
    trainer = _workloads(manifests)["trainer"]
    assert trainer["kind"] == "StatefulSet"
    spec = trainer["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    drain = next(v for v in container["env"] if v["name"] == "TRAINYARD_DRAIN_TIMEOUT_S")
    # The drain, then the hand-back, must fit in the grace period before SIGKILL.
    assert float(drain["value"]) + 30 <= spec["terminationGracePeriodSeconds"]
    trainer_id = next(v for v in container["env"] if v["name"] == "TRAINYARD_TRAINER_ID")
    assert trainer_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    services = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Service"}
    headless = services[trainer["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"


def test_helm_values_match_the_manifests(manifests: list[dict[str, Any]], secrets: dict[str, set[str]]) -> None:
    nats = _yaml(DEPLOY / "k8s" / "helm" / "nats-values.yaml")
    assert nats["configMap"]["merge"]["data"]["accounts.conf"] == (DEPLOY / "nats" / "accounts.conf").read_text()
    assert nats["config"]["jetstream"]["enabled"] and nats["fullnameOverride"] == "nats"
    env = nats["container"]["env"]
    assert set(env) == set(nats_accounts().values())
    for var in env.values():
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]
    mongo = _yaml(DEPLOY / "k8s" / "helm" / "mongodb-values.yaml")
    assert mongo["architecture"] == "replicaset" and mongo["auth"]["existingSecret"] in secrets
    for workload in _workloads(manifests).values():
        for var in workload["spec"]["template"]["spec"]["containers"][0]["env"]:
            if var["name"] == "TRAINYARD_MONGO_URL":
                url = var["value"]
                hosts = re.findall(rf"({mongo['fullnameOverride']}-\d)\.{mongo['fullnameOverride']}-headless", url)
                assert len(hosts) == mongo["replicaCount"]
                assert f"replicaSet={mongo['replicaSetName']}" in url
                assert f"authSource={mongo['auth']['databases'][0]}" in url
