"""The dashboard's first row (its panels, their queries, legends and units) and those queries
run against Prometheus' HTTP API, with the template variables filled in as Grafana would with
"All" selected.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class DashboardError(RuntimeError):
    """The dashboard is not shaped as expected, or a query gave nothing to plot."""


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    x: int
    y: int
    w: int
    h: int
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Series:
    legend: str
    times: list[float]  # unix seconds
    values: list[float]  # NaN where Prometheus had no value at that step


def first_row(dashboard_path: Path) -> tuple[str, list[Panel]]:
    """The first row's title and its panels: those between it and the next row (or nested in
    it, when the row is collapsed)."""
    dashboard = json.loads(dashboard_path.read_text())
    panels = sorted(
        dashboard.get("panels", []), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])
    )
    if not panels or panels[0].get("type") != "row":
        raise DashboardError(f"{dashboard_path}: the first panel is not a row")
    row = panels[0]
    members = row.get("panels") or []
    if not members:
        for panel in panels[1:]:
            if panel.get("type") == "row":
                break
            members.append(panel)
    if not members:
        raise DashboardError(f"{dashboard_path}: row {row.get('title')!r} has no panels")
    return row["title"], [to_panel(panel) for panel in members]


def to_panel(panel: dict) -> Panel:
    targets = tuple(
        Target(target["expr"], target.get("legendFormat", ""))
        for target in panel.get("targets", [])
        if target.get("expr") and not target.get("hide")
    )
    if not targets:
        raise DashboardError(f"panel {panel.get('title')!r} has no query")
    grid = panel["gridPos"]
    return Panel(
        title=panel["title"],
        unit=panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"),
        x=grid["x"],
        y=grid["y"],
        w=grid["w"],
        h=grid["h"],
        targets=targets,
    )


def substitute(expr: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise DashboardError(f"unknown template variable ${name} in: {expr}")
        return variables[name]

    return VARIABLE.sub(value, expr)


def legend(format_: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: {{label}} replaced by the series' value of that label."""
    if not format_:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), format_).strip()


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        url = f"{self.base_url}/api/v1/query_range?{query}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise DashboardError(
                f"prometheus refused {expr!r}: {error.read().decode(errors='replace')}"
            ) from error
        if body.get("status") != "success":
            raise DashboardError(f"prometheus failed on {expr!r}: {body.get('error')}")
        return body["data"]["result"]


def panel_series(
    prometheus: Prometheus,
    panel: Panel,
    variables: dict[str, str],
    start: float,
    end: float,
    step: float,
) -> list[Series]:
    """Every series of every query of the panel on one time grid; a query that returns no
    series, or only NaN, is an error: the picture must not show an empty panel."""
    grid = [start + i * step for i in range(int((end - start) // step) + 1)]
    found: list[Series] = []
    for target in panel.targets:
        expr = substitute(target.expr, variables)
        result = prometheus.query_range(expr, start, end, step)
        series = [to_series(item, target.legend, grid) for item in result]
        if not any(any(not math.isnan(v) for v in s.values) for s in series):
            raise DashboardError(f"panel {panel.title!r}: no data for {expr}")
        found.extend(series)
    return sorted(found, key=lambda s: s.legend)


def to_series(item: dict, legend_format: str, grid: list[float]) -> Series:
    by_time = {round(float(t), 3): float(v) for t, v in item["values"]}
    values = [by_time.get(round(t, 3), math.nan) for t in grid]
    return Series(legend(legend_format, item["metric"]), grid, values)
