"""collector-config.yaml: structurally sound for the contrib distribution, and tied to the telemetry contract.

No OpenTelemetry Collector binary is installable here, so the file is checked for structure: every component it
defines is used, every component a pipeline names is defined, pipelines are wired in an order that works, and the
sampling policies and metric dimensions name attributes the contract module defines (so they cannot drift).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_resilience import semconv

CONFIG = Path(__file__).resolve().parents[2] / "collector-config.yaml"
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
# Component types of otelcol-contrib that this file may use.
CONTRIB_TYPES = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "batch", "tail_sampling"},
    "exporters": {"otlp", "otlphttp", "loadbalancing", "debug", "prometheus", "prometheusremotewrite"},
    "connectors": {"spanmetrics", "forward"},
    "extensions": {"health_check"},
}
CONTRACT = {v for k, v in vars(semconv).items() if k.isupper() and isinstance(v, str)}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def component_type(name: str) -> str:
    return name.split("/", 1)[0]


def test_every_component_is_a_contrib_type(config: dict[str, Any]) -> None:
    for section in SECTIONS:
        for name in config.get(section) or {}:
            assert component_type(name) in CONTRIB_TYPES[section], f"{section}.{name}"


def test_pipelines_name_only_defined_components_and_use_every_one(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    connectors = set(config.get("connectors") or {})
    for pipeline_name, pipeline in pipelines.items():
        assert pipeline_name.split("/")[0] in {"traces", "metrics", "logs"}
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_name
        for role in ("receivers", "processors", "exporters"):
            for name in pipeline.get(role, []):
                section = "connectors" if name in connectors else role
                assert name in (config.get(section) or {}), f"{pipeline_name} names undefined {role[:-1]} {name}"
                used[section].add(name)
    for name in config["service"].get("extensions", []):
        assert name in config["extensions"]
        used["extensions"].add(name)
    for section in SECTIONS:
        assert used[section] == set(config.get(section) or {}), f"unused {section}"


def test_connectors_bridge_pipelines(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"].values()
    for connector in config["connectors"]:
        assert any(connector in p.get("exporters", []) for p in pipelines), connector
        assert any(connector in p.get("receivers", []) for p in pipelines), connector


def test_processor_order(config: dict[str, Any]) -> None:
    for name, pipeline in config["service"]["pipelines"].items():
        processors = pipeline.get("processors", [])
        assert processors[0] == "memory_limiter", name  # the limiter must see data first
        if "batch" in processors:
            assert processors[-1] == "batch", name  # batching after sampling, right before export
    sampled = [p for p in config["service"]["pipelines"].values() if "tail_sampling" in p.get("processors", [])]
    assert len(sampled) == 1
    # spanmetrics must see every span, so it is fed from a pipeline without sampling
    for pipeline in config["service"]["pipelines"].values():
        if "spanmetrics" in pipeline.get("exporters", []):
            assert "tail_sampling" not in pipeline.get("processors", [])


def test_receivers_take_otlp_grpc_and_http(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_backend_is_set_by_environment(config: dict[str, Any]) -> None:
    pushing = {name: e for name, e in config["exporters"].items() if component_type(name) != "prometheus"}
    assert pushing
    for name, exporter in pushing.items():
        assert re.fullmatch(r"\$\{env:[A-Z_]+\}", exporter["endpoint"]), name


def test_metrics_pipeline_serves_prometheus(config: dict[str, Any]) -> None:
    """The dashboards and alerts read Prometheus: every metric, the apps' and the span metrics, is served for it to
    scrape, unsampled, with exemplars (OpenMetrics), and series of processes that are gone expire."""
    pipelines = config["service"]["pipelines"]
    serving = [p for name, p in pipelines.items() if "prometheus" in p["exporters"]]
    assert len(serving) == 1 and set(serving[0]["receivers"]) == {"otlp", "spanmetrics"}
    assert "tail_sampling" not in serving[0].get("processors", [])
    exporter = config["exporters"]["prometheus"]
    assert re.fullmatch(r"0\.0\.0\.0:\d+", exporter["endpoint"])
    assert exporter["enable_open_metrics"] is True  # exemplars travel only in OpenMetrics
    assert exporter.get("add_metric_suffixes", True), "the rules and the dashboard expect _total, _seconds, _bucket"
    assert exporter.get("metric_expiration")
    assert config["connectors"]["spanmetrics"]["exemplars"]["enabled"] is True


def _policy_keys(policy: dict[str, Any]) -> list[str]:
    body = policy.get(policy["type"], {})
    keys = [body["key"]] if isinstance(body, dict) and "key" in body else []
    if policy["type"] == "ottl_condition":
        for condition in body.get("span", []) + body.get("spanevent", []):
            keys += re.findall(r'attributes\["([^"]+)"\]', condition)
            keys += re.findall(r'name == "([^"]+)"', condition)
    return keys


def test_sampling_policies_name_the_contract(config: dict[str, Any]) -> None:
    policies = config["processors"]["tail_sampling"]["policies"]
    keys = [key for policy in policies for key in _policy_keys(policy)]
    assert keys, "no attribute-based policy"
    assert set(keys) <= CONTRACT, set(keys) - CONTRACT
    by_key = {
        policy[policy["type"]]["key"]: policy[policy["type"]] for policy in policies if "key" in policy.get(policy["type"], {})
    }
    # the traces the issue says must always be kept
    assert by_key[semconv.RETRY_ATTEMPT]["min_value"] == 2  # a retry happened
    assert semconv.RESULT_EXHAUSTED in by_key[semconv.RETRY_RESULT]["values"]  # a retry was exhausted
    assert set(by_key[semconv.RETRY_RESULT]["values"]) <= set(semconv.RETRY_RESULTS) - {semconv.RESULT_SUCCESS}
    assert by_key[semconv.BREAKER_RESULT]["values"] == [semconv.CALL_REJECTED]  # a breaker rejected
    assert semconv.BREAKER_STATE_CHANGE_EVENT in keys  # a breaker changed state
    assert any(p["type"] == "probabilistic" for p in policies)  # plus a share of the rest


def test_spanmetrics_dimensions_are_contract_attributes(config: dict[str, Any]) -> None:
    dimensions = [d["name"] for d in config["connectors"]["spanmetrics"]["dimensions"]]
    assert set(dimensions) <= CONTRACT
    # never an attempt number: it would explode metric cardinality (DESIGN.md)
    assert semconv.RETRY_ATTEMPT not in dimensions
