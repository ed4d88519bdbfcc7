"""Unit tests of the picture's parts that can go wrong without a run:
target/venv-slo-picture/bin/python -m unittest discover -s scripts/slo_picture
(scripts/slo-picture creates that venv)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import threading
import unittest
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dashboard import (
    DashboardError,
    Panel,
    Prometheus,
    Target,
    first_row,
    legend,
    panel_series,
    substitute,
)
from load import TEAM_B_BURST, TEAM_B_BURST_FACTOR, TEAM_B_RATE, team_b_limit
from main import DASHBOARD, LoadError, check_outcomes, parse_args

ALL = {
    "namespace": ".*",
    "instance": ".*",
    "pool": ".*",
    "client_key": ".*",
    "__rate_interval": "15s",
}


class TheRealDashboard(unittest.TestCase):
    def test_first_row_is_the_slo_row_with_every_query_filled_in(self):
        title, panels = first_row(DASHBOARD)
        self.assertEqual(title, "Service level (what clients see)")
        self.assertGreaterEqual(len(panels), 4)
        for panel in panels:
            for target in panel.targets:
                self.assertNotIn("$", substitute(target.expr, ALL), panel.title)


def write_dashboard(panels: list[dict]) -> Path:
    path = Path(tempfile.mkdtemp()) / "dashboard.json"
    path.write_text(json.dumps({"panels": panels}))
    return path


def grid(y: int, x: int = 0) -> dict:
    return {"x": x, "y": y, "w": 12, "h": 8}


class DashboardShape(unittest.TestCase):
    def test_panels_stop_at_the_next_row(self):
        path = write_dashboard(
            [
                {"type": "row", "title": "SLO", "gridPos": grid(0)},
                {
                    "type": "timeseries",
                    "title": "a",
                    "gridPos": grid(1),
                    "targets": [{"expr": "up"}],
                },
                {"type": "row", "title": "next", "gridPos": grid(9)},
                {
                    "type": "timeseries",
                    "title": "b",
                    "gridPos": grid(10),
                    "targets": [{"expr": "up"}],
                },
            ]
        )
        title, panels = first_row(path)
        self.assertEqual((title, [p.title for p in panels]), ("SLO", ["a"]))
        self.assertEqual(panels[0].unit, "short")

    def test_a_collapsed_row_gives_its_nested_panels(self):
        nested = {
            "type": "timeseries",
            "title": "n",
            "gridPos": grid(1),
            "targets": [{"expr": "up"}],
        }
        path = write_dashboard(
            [{"type": "row", "title": "SLO", "gridPos": grid(0), "panels": [nested]}]
        )
        self.assertEqual([p.title for p in first_row(path)[1]], ["n"])

    def test_a_dashboard_not_starting_with_a_row_is_refused(self):
        path = write_dashboard(
            [{"type": "timeseries", "title": "a", "gridPos": grid(0), "targets": []}]
        )
        with self.assertRaisesRegex(DashboardError, "the first panel is not a row"):
            first_row(path)

    def test_an_empty_row_is_refused(self):
        path = write_dashboard(
            [
                {"type": "row", "title": "SLO", "gridPos": grid(0)},
                {"type": "row", "title": "next", "gridPos": grid(1)},
            ]
        )
        with self.assertRaisesRegex(DashboardError, "row 'SLO' has no panels"):
            first_row(path)

    def test_a_panel_without_a_query_is_refused(self):
        path = write_dashboard(
            [
                {"type": "row", "title": "SLO", "gridPos": grid(0)},
                {"type": "text", "title": "notes", "gridPos": grid(1)},
            ]
        )
        with self.assertRaisesRegex(DashboardError, "panel 'notes' has no query"):
            first_row(path)


class Templating(unittest.TestCase):
    def test_both_variable_forms_are_replaced(self):
        self.assertEqual(
            substitute('rate(x{pool=~"$pool", k=~"${client_key}"}[$__rate_interval])', ALL),
            'rate(x{pool=~".*", k=~".*"}[15s])',
        )

    def test_an_unknown_variable_is_an_error(self):
        with self.assertRaisesRegex(DashboardError, r"unknown template variable \$region"):
            substitute('x{region=~"$region"}', ALL)

    def test_legend_takes_the_series_labels(self):
        self.assertEqual(legend("p95 {{pool}}", {"pool": "gpt-4o"}), "p95 gpt-4o")
        self.assertEqual(
            legend("{{class}} {{ code }}", {"class": "4xx", "code": "invalid_api_key"}),
            "4xx invalid_api_key",
        )
        self.assertEqual(legend("", {"pool": "a", "class": "2xx"}), '{class="2xx", pool="a"}')


class FixedPrometheus:
    """An HTTP server on a free port answering every query_range with the same result."""

    def __init__(self, body: dict, status: int = 200) -> None:
        payload = json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Prometheus:
        self.thread.start()
        return Prometheus(f"http://127.0.0.1:{self.server.server_address[1]}")

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


PANEL = Panel(
    "Calls",
    "reqps",
    0,
    1,
    12,
    8,
    (Target('sum by (pool) (rate(x{pool=~"$pool"}[$__rate_interval]))', "{{pool}}"),),
)


def matrix(values: list[list]) -> dict:
    return {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"pool": "gpt-4o"}, "values": values}],
        },
    }


class Queries(unittest.TestCase):
    def test_series_land_on_the_step_grid_with_gaps_as_nan(self):
        with FixedPrometheus(matrix([[100, "1.5"], [102, "2"]])) as prometheus:
            [series] = panel_series(prometheus, PANEL, ALL, 100, 103, 1)
        self.assertEqual(series.legend, "gpt-4o")
        self.assertEqual(series.values[0], 1.5)
        self.assertTrue(math.isnan(series.values[1]))
        self.assertEqual(series.values[2:], [2.0, series.values[3]])
        self.assertTrue(math.isnan(series.values[3]))

    def test_no_series_is_an_error_naming_the_panel_and_query(self):
        empty = {"status": "success", "data": {"resultType": "matrix", "result": []}}
        with FixedPrometheus(empty) as prometheus:
            with self.assertRaisesRegex(
                DashboardError,
                r"panel 'Calls': no data for sum by \(pool\) \(rate\(x\{pool=~\"\.\*\"\}\[15s\]\)\)",
            ):
                panel_series(prometheus, PANEL, ALL, 100, 103, 1)

    def test_only_nan_is_no_data(self):
        with FixedPrometheus(matrix([[100, "NaN"], [101, "NaN"]])) as prometheus:
            with self.assertRaisesRegex(DashboardError, "no data"):
                panel_series(prometheus, PANEL, ALL, 100, 103, 1)

    def test_a_refused_query_shows_prometheus_error(self):
        refused = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
        with FixedPrometheus(refused, status=400) as prometheus:
            with self.assertRaisesRegex(
                DashboardError, "prometheus refused .*parse error at char 3"
            ):
                panel_series(prometheus, PANEL, ALL, 100, 103, 1)


class Arguments(unittest.TestCase):
    def refused(self, argv: list[str]) -> str:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit):
            parse_args(argv)
        return stderr.getvalue()

    def test_defaults(self):
        self.assertEqual(parse_args([]).duration, 180)
        self.assertEqual(parse_args(["--check"]).duration, 20)

    def test_bad_values_are_refused_with_the_reason(self):
        self.assertIn("--duration must be at least 10 seconds", self.refused(["--duration", "5"]))
        self.assertIn("'15' is not a Prometheus duration", self.refused(["--rate-interval", "15"]))
        self.assertIn(
            "--scrape-interval must be between", self.refused(["--scrape-interval", "30"])
        )


class LoadShape(unittest.TestCase):
    def test_team_b_stays_under_its_limit_until_its_burst(self):
        start, end = TEAM_B_BURST
        for duration in (20, 60, 180, 600):
            window = min(60, duration)  # the limit's rolling minute, or the whole of a short run
            burst = (end - start) * duration
            steady_count = TEAM_B_RATE * window
            count_at_burst_end = TEAM_B_RATE * (
                window - min(burst, window)
            ) + TEAM_B_RATE * TEAM_B_BURST_FACTOR * min(burst, window)
            self.assertLess(steady_count, team_b_limit(duration), duration)
            self.assertGreater(count_at_burst_end, team_b_limit(duration), duration)

    def test_a_load_without_an_error_kind_fails(self):
        outcomes = Counter(
            {
                "team-a gpt-4o json 200": 10,
                "wrong key gpt-4o json 401": 2,
                "team-a gpt-4o-mini json 500": 1,
            }
        )
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), self.assertRaisesRegex(
            LoadError, r"no 429 \(a key's limit, every backend out\)"
        ):
            check_outcomes(outcomes)


if __name__ == "__main__":
    unittest.main()
