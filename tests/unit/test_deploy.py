"""deploy/ against the code and against the formats' own schemas.

* The Grafana dashboard has the structure Grafana needs, uses the provisioned data
  source, parses as PromQL (``promtool check rules``) and names only metrics that
  stream_app.worker.metrics defines. ``dashboard_metric_names()`` is imported by
  tests/integration/test_dashboard.py, which checks them against a live worker's /metrics.
* docker-compose.yml validates against the Compose Specification schema (vendored by
  check-jsonschema) and its services, volumes, files and environment agree with each other,
  with the Prometheus and Grafana configuration and with stream_app.settings.
* The Kubernetes manifests validate against the Kubernetes JSON schemas bundled by
  kubernetes-validate (strict: unknown fields fail) and agree with each other.
* prometheus.yml passes ``promtool check config``.
* The Dockerfile has the essentials (base image, non-root user, entry point, health check).

Only the promtool tests can skip, and only when promtool is not installed outside CI
(``make tools`` installs it; under CI, with ``CI`` set, they fail instead).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import check_jsonschema  # type: ignore[import-untyped]  # ships the Compose Specification schema
import kubernetes_validate  # type: ignore[import-untyped]  # bundles the Kubernetes schemas
import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream_app.settings import VARIABLES, Settings
from stream_app.worker.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stream-app.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "stream-app.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"

WORKERS = ("worker-1", "worker-2")
WORKER_LABELS = {"app.kubernetes.io/name": "stream-app", "app.kubernetes.io/component": "worker"}
KNOWN_VARIABLES = {v.name for v in VARIABLES}
DEFAULT_WEB_PORT = Settings.from_env({}).web_port
# Kubernetes versions the manifests must be valid for: an old one and the newest bundled.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- PromQL: which metrics a dashboard uses ----------------------------------------------

_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLES = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# an identifier not glued to a number (1e3, 5m, 0x1f) or a preceding identifier
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")
_VARIABLE_QUERY = re.compile(r"^\s*(label_values|query_result|label_names|metrics)\s*\((.*)\)\s*$", re.S)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, as the exposition names them, except
    that ``x_bucket`` is reported as the histogram ``x``. PromQL functions and aggregations
    (identifiers followed by ``(``), keywords, label names and values, durations, numbers
    and Grafana variables are not metric names; neither is Prometheus's own ``up``."""
    text = _STRINGS.sub('""', expr)
    text = _GRAFANA_VARIABLES.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = _LABEL_LISTS.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        if text[match.end() :].lstrip().startswith("(") or name.lower() in _PROMQL_WORDS:
            continue
        if name.endswith("_bucket"):
            name = name.removesuffix("_bucket")
        if name != "up":
            names.add(name)
    return names


@cache
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def variable_expression(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query, if there is any:
    ``label_values(expr, label)`` and ``query_result(expr)`` hold one;
    ``label_values(label)``, ``label_names()`` and ``metrics(regex)`` do not."""
    match = _VARIABLE_QUERY.match(query)
    if match is None:
        return None
    function, arguments = match.groups()
    if function == "query_result":
        return arguments
    if function == "label_values" and "," in arguments:
        return arguments.rsplit(",", 1)[0]
    return None


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and query variables."""
    exprs = [t["expr"] for p in all_panels(dashboard()["panels"]) for t in p.get("targets", [])]
    for variable in dashboard().get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            expr = variable_expression(query.get("query", "") if isinstance(query, dict) else query)
            if expr is not None:
                exprs.append(expr)
    return exprs


def dashboard_metric_names() -> set[str]:
    """Every metric the dashboard's PromQL uses (see promql_metric_names): counters as
    ``x_total``, gauges as ``x``, histograms as ``x`` (used as ``x_bucket``)."""
    return set().union(*(promql_metric_names(expr) for expr in dashboard_expressions()))


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (topic) (rate(stream_app_input_messages_total{topic=~"a|b"}[5m]))',
         {"stream_app_input_messages_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[$__rate_interval])))", {"x_seconds"}),
        ('up{job="stream-app"} == 0 and on(instance) group_left(version) build_info', {"build_info"}),
        ("time() - (last_sweep{instance=~\"$instance\"} > 0) offset 5m", {"last_sweep"}),
        ("sum without (partition) (lag) / ignoring (x) count(lag) * 1e3 > bool Inf", {"lag"}),
        ('label_replace(a:recorded:rate5m, "dst", "$1", "src", "(.*)")', {"a:recorded:rate5m"}),
        ("sum(rate(x_total[${__range}])) by (job)", {"x_total"}),
    ],
)  # fmt: skip
def test_promql_metric_names_finds_metrics_and_nothing_else(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


@pytest.mark.parametrize(
    ("query", "expr"),
    [
        ('label_values(up{job="stream-app"}, instance)', 'up{job="stream-app"}'),
        ("label_values(instance)", None),
        ("query_result(topk(5, sum by (topic) (lag)))", "topk(5, sum by (topic) (lag))"),
        ("metrics(stream_app_.*)", None),
    ],
)
def test_variable_expression_finds_the_promql_of_a_variable(query: str, expr: str | None) -> None:
    assert variable_expression(query) == expr


# --- the dashboard ----------------------------------------------------------------------


def provisioned_datasource() -> dict[str, Any]:
    [source] = load_yaml(DATASOURCES)["datasources"]
    assert isinstance(source, dict)
    return source


def test_dashboard_has_the_structure_grafana_needs() -> None:
    board = dashboard()
    assert board["title"]
    assert board["uid"] == "stream-app"
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    panels = list(all_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["type"] and panel["title"], panel
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert len(panel.get("description", "")) > 40, f"{panel['title']}: say what it means to an operator"
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard()["panels"]):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_queries_the_provisioned_prometheus() -> None:
    source = provisioned_datasource()
    assert source["type"] == "prometheus"
    expected = {"type": "prometheus", "uid": source["uid"]}
    for panel in all_panels(dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", expected) == expected, panel["title"]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == expected


def test_dashboard_shows_what_operators_need() -> None:
    names = dashboard_metric_names()
    for metric in (
        "stream_app_input_messages_total",
        "stream_app_consumer_lag_messages",
        "stream_app_data_freshness_seconds",
        "stream_app_commands_total",
        "stream_app_alerts_total",
        "stream_app_suspended_sims",
        "stream_app_sims",
        "stream_app_decision_latency_seconds",
        "stream_app_dead_letters_total",
        "stream_app_last_sweep_timestamp_seconds",
        "stream_app_last_sweep_duration_seconds",
    ):
        assert metric in names, metric
    exprs = dashboard_expressions()
    assert any(re.search(r'\bup\{job="stream-app"', e) for e in exprs), 'workers up: up{job="stream-app"}'
    for quantile in ("0.5", "0.99"):
        assert any(f"histogram_quantile({quantile}," in e and "decision_latency" in e for e in exprs)
    assert any("histogram_quantile(" in e and "data_freshness_seconds_bucket" in e for e in exprs)


def exported_metric_names() -> set[str]:
    """Names as Prometheus stores them: ``x_total`` for counters, the family name for
    gauges and histograms (whose ``_bucket`` suffix promql_metric_names strips)."""
    registry = CollectorRegistry()
    Metrics(registry)
    return {f"{f.name}_total" if f.type == "counter" else f.name for f in registry.collect()}


def test_dashboard_names_only_metrics_that_stream_app_defines() -> None:
    unknown = dashboard_metric_names() - exported_metric_names()
    assert not unknown, f"not in stream_app/metrics.py (mind the _total of counters): {sorted(unknown)}"


def grafana_to_promql(expr: str, interval: str = "5m") -> str:
    """Grafana's variables replaced by values Prometheus parses: its interval variables
    ($__rate_interval, ${__range}, ...) by ``interval``, a dashboard variable ($instance,
    a regex matcher value) by its "All" value."""
    expr = re.sub(r"\$(?:\{__\w+\}|__\w+)", interval, expr)
    return _GRAFANA_VARIABLES.sub(".*", expr)


def prometheus_binary(name: str) -> str:
    """A binary of Debian's ``prometheus`` package (``make tools`` installs it). Missing,
    the test skips and says so, except under CI (``CI`` set), where it fails."""
    path = shutil.which(name)
    if path is None:
        missing = f"{name} is not installed: `make tools` installs it (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return path


def promtool() -> str:
    return prometheus_binary("promtool")


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:expression_{n}:check", "expr": grafana_to_promql(expr)}
        for n, expr in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Prometheus ---------------------------------------------------------------------------


def test_prometheus_config_passes_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(PROMETHEUS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_worker_as_the_job_the_dashboard_selects() -> None:
    [job] = [j for j in load_yaml(PROMETHEUS)["scrape_configs"] if j["job_name"] == "stream-app"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{w}:{DEFAULT_WEB_PORT}" for w in WORKERS}


# --- docker compose -----------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def run_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            check_jsonschema.__name__,
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_compose_file_matches_the_compose_specification() -> None:
    result = run_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_is_not_vacuous(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restart_policy: sometimes", 1))
    assert run_compose_schema(broken).returncode != 0


def service_environment(name: str) -> dict[str, str]:
    env = compose()["services"][name].get("environment", {})
    assert isinstance(env, dict), f"{name}: environment as a mapping"
    return {k: "" if v is None else str(v) for k, v in env.items()}


def stream_app_services() -> list[str]:
    image = compose()["services"]["topics"]["image"]
    return [name for name, service in compose()["services"].items() if service.get("image") == image]


def test_compose_services_volumes_and_files_are_consistent() -> None:
    services = compose()["services"]
    assert {"kafka", "topics", *WORKERS, "prometheus", "grafana"} <= set(services)
    declared = set(compose().get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
        if "build" in service:
            build = service["build"]
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert used == declared, f"declared but unused: {declared - used}"
    worker_volumes = [
        v.split(":")[0] for w in WORKERS for v in services[w]["volumes"] if not v.startswith((".", "/"))
    ]
    assert len(set(worker_volumes)) == len(WORKERS), "each worker needs its own data volume"


def test_compose_kafka_is_a_kraft_node_that_containers_reach_as_kafka_9092() -> None:
    kafka = compose()["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and tag.startswith("4.")
    env = service_environment("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "healthcheck" in kafka
    assert compose()["services"]["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_runs_topics_once_then_the_workers() -> None:
    services = compose()["services"]
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"].get("restart", "no") == "no"
    for worker in WORKERS:
        service = services[worker]
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service.get("command", ["worker"]) == ["worker"]


def test_compose_workers_are_configured_for_real() -> None:
    services = compose()["services"]
    hosts = set()
    for worker in WORKERS:
        env = service_environment(worker)
        settings = Settings.from_env(env)
        assert settings.bootstrap_servers == "kafka:9092"
        assert settings.store == "rocksdb://"
        assert settings.web_host == worker, "peers reach a worker by its service name"
        hosts.add(settings.web_host)
        mounts = [v.split(":") for v in services[worker]["volumes"]]
        assert any(
            target == settings.data_dir and not source.startswith(".") for source, target, *_ in mounts
        )
        assert any(str(p).endswith(f":{settings.web_port}") for p in services[worker].get("ports", []))
    assert len(hosts) == len(WORKERS)


def test_compose_environment_names_only_known_variables() -> None:
    for name in stream_app_services():
        for variable in service_environment(name):
            if variable.startswith("STREAM_APP_FAUST_"):
                continue  # Faust's own settings
            assert variable in KNOWN_VARIABLES, f"{name}: unknown variable {variable}"
        Settings.from_env(service_environment(name))


def test_compose_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {
        (DEPLOY / source).resolve(): target
        for source, target, *_ in (v.split(":") for v in grafana["volumes"])
        if source.startswith(".")
    }
    provisioning = mounts[(DEPLOY / "grafana" / "provisioning").resolve()]
    assert provisioning == "/etc/grafana/provisioning"
    [provider] = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == mounts[DASHBOARD.parent.resolve()]
    source = provisioned_datasource()
    host_port = re.fullmatch(r"http://([\w.-]+):(\d+)/?", source["url"])
    assert host_port is not None
    assert host_port.group(1) in compose()["services"] and host_port.group(1) == "prometheus"
    assert all(
        p["datasource"]["uid"] == source["uid"]
        for p in all_panels(dashboard()["panels"])
        if p["type"] != "row"
    )


# --- Kubernetes -------------------------------------------------------------------------


@cache
def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every document of deploy/k8s, by file name (kustomization.yaml excluded)."""
    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text()) if d]
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [
        d
        for docs in manifests().values()
        for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return found


def k8s_params() -> list[Any]:
    return [
        pytest.param(doc, version, id=f"{file}:{doc['kind']}/{doc['metadata']['name']}@{version}")
        for file, docs in sorted(manifests().items())
        for doc in docs
        if doc["apiVersion"] != "monitoring.coreos.com/v1"
        for version in KUBERNETES_VERSIONS
    ]


@pytest.mark.parametrize(("document", "version"), k8s_params())
def test_k8s_manifest_matches_the_kubernetes_schema(document: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.utils.ValidationError as exc:
        pytest.fail(f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_k8s_schema_check_is_not_vacuous() -> None:
    broken = json.loads(json.dumps(resource("StatefulSet")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_k8s_kustomization_lists_every_manifest_but_the_podmonitor() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert set(kustomization["resources"]) == set(manifests()) - {"podmonitor.yaml"}


def test_k8s_manifests_are_namespace_agnostic() -> None:
    for file, docs in manifests().items():
        for doc in docs:
            assert "namespace" not in doc["metadata"], file
    assert "namespace" not in load_yaml(K8S / "kustomization.yaml")


def configmap_name() -> str:
    name: str = resource("ConfigMap")["metadata"]["name"]
    return name


def configmap_env() -> dict[str, str]:
    data = resource("ConfigMap")["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    return dict(data)


def test_k8s_configmap_names_only_known_variables_with_valid_values() -> None:
    env = configmap_env()
    for variable in env:
        assert variable in KNOWN_VARIABLES or variable.startswith("STREAM_APP_FAUST_"), variable
    settings = Settings.from_env(env)
    assert settings.store == "rocksdb://"
    assert "STREAM_APP_WEB_HOST" not in env, "the web host is per pod"


def worker_pod() -> dict[str, Any]:
    pod: dict[str, Any] = resource("StatefulSet")["spec"]["template"]
    return pod


def worker_container() -> dict[str, Any]:
    [container] = [c for c in worker_pod()["spec"]["containers"] if c["name"] == "worker"]
    assert isinstance(container, dict)
    return container


def container_port(container: dict[str, Any], port: int | str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports[port] if isinstance(port, str) else port


def test_k8s_statefulset_runs_two_workers_with_their_own_volumes() -> None:
    sts = resource("StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= worker_pod()["metadata"]["labels"].items()
    headless = resource("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    pod = worker_pod()["spec"]
    assert pod["enableServiceLinks"] is False
    settings = Settings.from_env(configmap_env())
    [claim] = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in worker_container()["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == settings.data_dir


def test_k8s_worker_container_is_probed_secured_and_configured() -> None:
    container = worker_container()
    pod = worker_pod()["spec"]
    assert container["args"] == ["worker"]
    assert {e["configMapRef"]["name"] for e in container["envFrom"]} == {configmap_name()}
    web_port = Settings.from_env(configmap_env()).web_port
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert container_port(container, get["port"]) == web_port
    env = {e["name"]: e for e in container["env"]}
    host = env["STREAM_APP_WEB_HOST"]
    headless = resource("StatefulSet")["spec"]["serviceName"]
    assert host.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP" or (
        host["value"].startswith(f"$(POD_NAME).{headless}.")
    )
    defined_before = {name for name in list(env)[: list(env).index("STREAM_APP_WEB_HOST")]}
    assert set(re.findall(r"\$\((\w+)\)", host.get("value", ""))) <= defined_before
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    annotations = worker_pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == web_port
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"


def test_k8s_services_select_the_workers_on_their_web_port() -> None:
    labels = worker_pod()["metadata"]["labels"]
    container = worker_container()
    services = [d for d in manifests()["service.yaml"] + manifests()["service-headless.yaml"]]
    assert {s["spec"].get("clusterIP") for s in services} == {None, "None"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        [port] = service["spec"]["ports"]
        assert container_port(container, port["targetPort"]) == Settings.from_env(configmap_env()).web_port


def test_k8s_job_creates_the_topics_and_is_not_selected_as_a_worker() -> None:
    job = resource("Job")
    template = job["spec"]["template"]
    [container] = template["spec"]["containers"]
    assert container["args"] == ["topics", "create"]
    assert container["image"] == worker_container()["image"]
    assert {e["configMapRef"]["name"] for e in container["envFrom"]} == {configmap_name()}
    assert template["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    assert template["spec"]["enableServiceLinks"] is False
    for service in (resource("Service", "stream-app"), resource("Service", "stream-app-headless")):
        assert not service["spec"]["selector"].items() <= template["metadata"]["labels"].items()


def test_k8s_podmonitor_scrapes_the_workers_as_job_stream_app() -> None:
    monitor = resource("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = worker_pod()["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels[monitor["spec"]["jobLabel"]] == "stream-app", 'the dashboard selects up{job="stream-app"}'
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert container_port(worker_container(), endpoint["port"]) == Settings.from_env(configmap_env()).web_port
    assert endpoint.get("path", "/metrics") == "/metrics"


def test_the_image_has_the_store_and_the_pods_the_labels_the_manifests_use() -> None:
    assert worker_pod()["metadata"]["labels"].items() >= WORKER_LABELS.items()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = DOCKERFILE.read_text() + " ".join(project["dependencies"])
    assert "rocksdict" in installed, "the image needs rocksdict for STREAM_APP_STORE=rocksdb://"


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if logical:
            keyword, _, arguments = logical.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_has_the_essentials() -> None:
    stage = final_stage()
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in stage:
        by_keyword.setdefault(keyword, []).append(arguments)
    assert stage[0][1].split()[0] == "python:3.11-slim"
    user = by_keyword["USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["stream-app"]
    assert json.loads(by_keyword["CMD"][-1]) == ["worker"]
    assert str(DEFAULT_WEB_PORT) in by_keyword["EXPOSE"][-1].split()


def test_dockerfile_healthcheck_asks_healthz_with_python_urllib() -> None:
    [healthcheck] = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    code = command[2]
    compile(code, "<healthcheck>", "exec")  # slim has no curl: python must be able to run it
    assert "urllib" in code and "/healthz" in code and "STREAM_APP_WEB_PORT" in code


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].strip().rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _ = arguments.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in included, f"{source} is excluded by Dockerfile.dockerignore"
