"""The PromQL expressions of the Grafana dashboard and of the alert rules, ready to send to Prometheus."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "vigil-dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"

#: How the tests fill Grafana's variables: every camera, and a rate window that a 1 s scrape fills.
GRAFANA_VARIABLES = {"$__rate_interval": "20s", "$stream": ".*"}

_COMPARISON = re.compile(r"^(?P<signal>.+?)\s*(?P<op>>|<|==|!=|>=|<=)\s*(?P<threshold>-?[0-9.]+(?:e-?[0-9]+)?)$",
                         re.DOTALL)


@dataclass(frozen=True)
class Query:
    where: str  # "panel 'Queue lag' target A" / "rule vigil:camera_down"
    expr: str  # what is sent to Prometheus
    per_camera: bool  # every series it returns must carry a `stream` label


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def load_rules(path: Path = RULES) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def fill_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def dashboard_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels of a collapsed row
    return [p for p in out if p.get("type") != "row"]


def dashboard_queries(dash: dict[str, Any] | None = None) -> list[Query]:
    """Every target of every panel; a panel is per camera when its queries use ``$stream``."""
    queries = []
    for panel in dashboard_panels(dash or load_dashboard()):
        for t in panel.get("targets", []):
            queries.append(Query(f"panel {panel['title']!r} target {t['refId']}", fill_grafana_variables(t["expr"]),
                                 "$stream" in t["expr"]))
    return queries


def split_alert(expr: str) -> tuple[str, str, float]:
    """An alert expression ``signal <op> threshold`` -> its parts (the shape every Vigil alert has)."""
    m = _COMPARISON.match(expr.strip())
    if m is None:
        raise ValueError(f"alert expression {expr!r} is not `signal <op> threshold`")
    return m.group("signal").strip(), m.group("op"), float(m.group("threshold"))


def rule_queries(rules: dict[str, Any] | None = None) -> list[Query]:
    """Every recording rule's expression, and the signal side of every alert's comparison.

    An alert is per camera when its annotations name ``$labels.stream``; so is every recorded series
    that such an alert compares.
    """
    rule_list = [r for g in (rules or load_rules())["groups"] for r in g["rules"]]
    per_camera_records: set[str] = set()
    for rule in rule_list:
        if "alert" in rule and "$labels.stream" in json.dumps(rule.get("annotations", {})):
            per_camera_records.add(split_alert(str(rule["expr"]))[0])
    queries = []
    for rule in rule_list:
        expr = str(rule["expr"]).strip()
        if "record" in rule:
            queries.append(Query(f"rule {rule['record']}", expr, rule["record"] in per_camera_records))
        else:
            signal = split_alert(expr)[0]
            queries.append(Query(f"alert {rule['alert']}", signal, signal in per_camera_records))
    return queries


def alert_rule(name: str, rules: dict[str, Any] | None = None) -> dict[str, Any]:
    for group in (rules or load_rules())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                found: dict[str, Any] = rule
                return found
    raise KeyError(name)


def duration_s(text: str) -> float:
    """A Prometheus duration (``90s``, ``1m``, ``1h30m``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)
