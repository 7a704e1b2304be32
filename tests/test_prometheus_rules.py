"""The Prometheus alerting rules and the Grafana dashboard that ship in docs/, checked with the
real ``promtool`` (Debian package ``prometheus``), no mocks:

* ``promtool check rules`` accepts the rules file, and ``promtool test rules`` passes its unit
  tests (docs/prometheus/sshmonitor-rules.test.yml);
* every alert has a unit test in which it fires and one in which it stays silent, so a new
  alert without a test fails here;
* the dashboard is well-formed Grafana JSON, and every panel's query, wrapped as a recording
  rule, passes ``promtool check rules`` (Grafana's ``$variables`` replaced by sample values);
* rules and dashboard use only the metrics the daemon serves (metrics.SPEC), and ``up``.

``dashboard_metric_names()`` is imported by the test that scrapes the real daemon, to check
that every metric the dashboard shows is actually served.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import need

from sshmonitord.metrics import SPEC

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "prometheus" / "sshmonitor-rules.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "sshmonitor-rules.test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "sshmonitor.json"

# Every metric the daemon serves (metrics.SPEC, documented in docs/monitoring.md), by its
# family name: histograms without their _bucket/_sum/_count suffix, counters with _total.
METRIC_NAMES: frozenset[str] = frozenset(SPEC)
HISTOGRAMS: frozenset[str] = frozenset(n for n, (kind, *_rest) in SPEC.items() if kind == "histogram")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SEVERITIES = {"warning", "critical"}

# Grafana's variables in the dashboard's queries, replaced by values promtool can parse. A
# variable not listed here fails test_dashboard_queries_parse: add a sample value for it.
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "instance": ".+",
}

# A metric name of ours: starts with sshmonitor_, not preceded by a name character.
_METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:])sshmonitor_[A-Za-z0-9_:]+")
_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "atan2", "inf", "nan", "Inf", "NaN"}
)
_VARIABLE_RE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


# --- helpers ---------------------------------------------------------------------------------


def promtool() -> str:
    """The promtool binary: skipped on a developer box without it, a failure in CI."""
    path = shutil.which("promtool")
    need(path is not None, "promtool (Debian package prometheus)")
    assert path is not None
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def explain(r: subprocess.CompletedProcess[str]) -> str:
    return f"promtool {' '.join(r.args[1:])} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alerting_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, also those inside a collapsed row."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs() -> Iterator[tuple[int, int, str]]:
    """(panel id, target index, expr) for every query of the dashboard."""
    for panel in all_panels(load_dashboard()["panels"]):
        for n, target in enumerate(panel.get("targets", [])):
            yield panel["id"], n, target["expr"]


def family_name(name: str) -> str:
    """sshmonitor_x_seconds_bucket (and _sum, _count) -> sshmonitor_x_seconds, for our
    histograms only: sshmonitor_bans_total_count stays what it is, an unknown name."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def metric_names(expr: str) -> set[str]:
    """The sshmonitor_* family names an expression uses (histogram suffixes stripped)."""
    return {family_name(name) for name in _METRIC_RE.findall(expr)}


def selector_names(expr: str) -> set[str]:
    """Every metric name an expression selects, ours or not (sshmonitor_*_bucket as written).

    Not a PromQL parser, but enough for our queries: strings, label matchers, ranges and
    grouping clauses are cut out; of the words left, one followed by "(" is a function or an
    aggregation, a keyword is a keyword, and every other word is a metric name.
    """
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end() :].lstrip().startswith("(") or m.group() in _PROMQL_KEYWORDS:
            continue
        names.add(m.group())
    return names


def foreign_metrics(expr: str) -> set[str]:
    """The metrics an expression selects that are neither ours nor up."""
    return {n for n in selector_names(expr) if n != "up" and family_name(n) not in METRIC_NAMES}


def dashboard_metric_names() -> set[str]:
    """The sshmonitor_* metrics the dashboard's queries use, by family name (_bucket, _sum
    and _count stripped)."""
    names: set[str] = set()
    for _, _, expr in dashboard_exprs():
        names |= metric_names(expr)
    return names


def rule_metric_names() -> set[str]:
    names: set[str] = set()
    for rule in alerting_rules():
        names |= metric_names(rule["expr"])
    return names


def substitute_variables(expr: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"Grafana variable ${name} has no sample value: {expr}")
        return GRAFANA_VARIABLES[name]

    return _VARIABLE_RE.sub(value, expr)


# --- the rules -------------------------------------------------------------------------------


@pytest.mark.real
def test_promtool_check_rules() -> None:
    r = run_promtool("check", "rules", RULES)
    assert r.returncode == 0, explain(r)
    assert f"SUCCESS: {len(alerting_rules())} rules found" in r.stdout, explain(r)


@pytest.mark.real
def test_promtool_unit_tests_pass() -> None:
    r = run_promtool("test", "rules", RULE_TESTS)
    assert r.returncode == 0, explain(r)
    assert "SUCCESS" in r.stdout, explain(r)


@pytest.mark.real
def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The checks above can fail: a rate() without a range is refused, with a non-zero exit."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n"
        "  - name: x\n"
        "    rules:\n"
        "      - alert: Broken\n"
        "        expr: rate(sshmonitor_lines_read_total) > 0\n"
    )
    r = run_promtool("check", "rules", broken)
    assert r.returncode != 0, explain(r)
    assert "range vector" in r.stdout + r.stderr, explain(r)


def test_rules_are_written_for_a_sysadmin() -> None:
    groups = load_yaml(RULES)["groups"]
    assert [g["name"] for g in groups] == ["sshmonitor"]
    names = [r["alert"] for r in alerting_rules()]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    for rule in alerting_rules():
        assert rule["alert"].startswith("Sshmonitor"), rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{rule['alert']}: no summary"
        assert len(annotations.get("description", "")) > 100, f"{rule['alert']}: no description"
        assert "Check first" in annotations["description"], f"{rule['alert']}: what to check?"


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    tests = load_yaml(RULE_TESTS)
    assert tests["rule_files"] == [RULES.name], "the unit tests must load the rules file"
    fires: set[str] = set()
    silent: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = {r["alert"] for r in alerting_rules()}
    assert not alerts - fires, f"alerts without a test in which they fire: {alerts - fires}"
    assert not alerts - silent, (
        f"alerts without a test in which they stay silent: {alerts - silent}"
    )
    # A test of a misspelt alert name would pass without testing anything.
    assert not (fires | silent) - alerts, f"tests of unknown alerts: {(fires | silent) - alerts}"


def test_rules_use_only_served_metrics() -> None:
    unknown = rule_metric_names() - METRIC_NAMES
    assert not unknown, f"the rules use metrics the daemon does not serve: {unknown}"
    for rule in alerting_rules():
        expr = rule["expr"]
        others = foreign_metrics(expr)
        assert not others, f"{rule['alert']}: metrics that are neither ours nor up: {others}"
        for m in re.finditer(r"\bup\{([^}]*)\}", expr):
            assert 'job="sshmonitor"' in m.group(1), f"{rule['alert']}: up without our job"


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"] == "sshmonitord"
    assert dashboard["uid"] == "sshmonitord"
    assert 36 <= dashboard["schemaVersion"] <= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = list(all_panels(dashboard["panels"]))
    assert panels, "no panels"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"panel ids are not unique: {sorted(ids)}"
    for panel in panels:
        where = f"panel {panel.get('id')} ({panel.get('title')!r})"
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy"), where
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, where
        assert panel.get("title"), where
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"stat", "timeseries", "gauge", "table", "bargauge"}, where
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", where
        targets = panel.get("targets", [])
        assert targets, f"{where}: no targets"
        for target in targets:
            assert target.get("expr", "").strip(), f"{where}: a target without an expr"
            assert target.get("refId"), where
        assert len({t["refId"] for t in targets}) == len(targets), f"{where}: refIds repeat"


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in load_dashboard()["panels"]:  # top level; a collapsed row's panels are hidden
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[x, y]} and {panel['id']} overlap"
                cells[x, y] = panel["id"]


def test_dashboard_covers_the_health_rows() -> None:
    titles = [p["title"] for p in all_panels(load_dashboard()["panels"]) if p["type"] == "row"]
    for word in ("Health", "Attacks", "Bans", "Alerts", "Sources", "Latency", "Fleet"):
        assert any(word in t for t in titles), f"no {word} row: {titles}"
    exprs = " ".join(expr for _, _, expr in dashboard_exprs())
    assert 'up{job="sshmonitor"' in exprs
    assert exprs.count("histogram_quantile(") >= 3


@pytest.mark.real
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every panel query, as a recording rule dashboard:panel_<id>_<n>, passes promtool."""
    rules = [
        {"record": f"dashboard:panel_{pid}_{n}", "expr": substitute_variables(expr)}
        for pid, n, expr in dashboard_exprs()
    ]
    assert rules
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run_promtool("check", "rules", path)
    assert r.returncode == 0, explain(r)
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout, explain(r)


def test_dashboard_uses_only_served_metrics() -> None:
    unknown = dashboard_metric_names() - METRIC_NAMES
    assert not unknown, f"the dashboard uses metrics the daemon does not serve: {unknown}"
    for pid, _, expr in dashboard_exprs():
        others = foreign_metrics(expr)
        assert not others, f"panel {pid}: metrics that are neither ours nor up: {others}"


def test_dashboard_shows_every_metric() -> None:
    """Nothing the daemon serves is left off the dashboard."""
    missing = METRIC_NAMES - dashboard_metric_names()
    assert not missing, f"metrics not on the dashboard: {missing}"


def test_metric_names_strip_histogram_suffixes_only() -> None:
    assert HISTOGRAMS <= METRIC_NAMES
    assert not [n for n in METRIC_NAMES if n.endswith(HISTOGRAM_SUFFIXES)]
    assert metric_names(
        'rate(sshmonitor_store_write_seconds_bucket{le="1"}[5m])'
        " / rate(sshmonitor_store_write_seconds_count[5m])"
    ) == {"sshmonitor_store_write_seconds"}
    # not a histogram: the suffix stays, and the name is unknown
    assert metric_names("sshmonitor_bans_total_count") == {"sshmonitor_bans_total_count"}
    # a whole name, not a piece of a longer one
    assert metric_names("xsshmonitor_fake + sshmonitor_fleet_peers2") == {"sshmonitor_fleet_peers2"}


def test_selector_names_finds_foreign_metrics() -> None:
    expr = (
        'sum by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])) '
        '/ on (instance) group_left count(up{job="sshmonitor"} offset 1h) '
        '> 0 and histogram_quantile(0.99, sum by (le) (rate(x_bucket{le=~"1|2"}[$__rate_interval])))'
    )
    assert selector_names(expr) == {"node_cpu_seconds_total", "up", "x_bucket"}
    assert foreign_metrics(expr) == {"node_cpu_seconds_total", "x_bucket"}
    assert not foreign_metrics("rate(sshmonitor_fleet_ban_propagation_seconds_sum[5m])")
