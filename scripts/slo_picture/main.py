"""Renders the Grafana dashboard's SLO row from real data: a real Prometheus scraping a real
Sluice under generated load, the panels' own queries, plotted with matplotlib.

Run through scripts/slo-picture, which provides Prometheus and matplotlib.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from dashboard import DashboardError, Prometheus, first_row, panel_series
from faults import FaultError, FaultTimeline
from load import drive, team_b_limit
from plot import render
from stack import Stack, StackError

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy/grafana/sluice-dashboard.json"
MAX_PNG_BYTES = 300 * 1024
PROMETHEUS_DURATION = re.compile(r"([1-9][0-9]*)(ms|s|m|h)")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


class LoadError(RuntimeError):
    """The load did not produce what the panels are meant to show."""


def duration_seconds(duration: str) -> float:
    count, unit = PROMETHEUS_DURATION.fullmatch(duration).groups()
    return int(count) * DURATION_UNITS[unit]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/slo-picture", description=__doc__)
    parser.add_argument(
        "--duration", type=float, help="seconds of load (default 180; 20 with --check)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="a quick run (20 s of load) that proves every panel gets data; the PNG goes to the "
        "temporary directory (removed afterwards unless --keep-tmp) unless --out is given",
    )
    parser.add_argument(
        "--out", type=Path, help="the PNG to write (default docs/images/slo-row.png)"
    )
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument(
        "--rate-interval",
        help="what $__rate_interval becomes, a Prometheus duration (default 15s, 5s with --check: "
        "several scrapes); the picture starts one such window after the load, when the windows are full",
    )
    parser.add_argument(
        "--sluice-bin",
        type=Path,
        default=Path(os.environ.get("SLUICE_BIN", REPO / "target/release/sluice")),
        help="the sluice binary (default $SLUICE_BIN, else target/release/sluice)",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs, logs and the TSDB")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 20.0 if args.check else 180.0
    if args.duration < 10:
        parser.error("--duration must be at least 10 seconds (rates need a few scrapes)")
    if args.rate_interval is None:
        args.rate_interval = "5s" if args.check else "15s"
    if not PROMETHEUS_DURATION.fullmatch(args.rate_interval):
        parser.error(
            f"--rate-interval {args.rate_interval!r} is not a Prometheus duration such as 15s or 1m"
        )
    if args.duration < 2 * duration_seconds(args.rate_interval):
        parser.error(f"--duration must be at least twice --rate-interval ({args.rate_interval})")
    if not 0.2 <= args.scrape_interval <= 5:
        parser.error("--scrape-interval must be between 0.2 and 5 seconds")
    return args


def version(argv: list[str]) -> str:
    return (
        subprocess.run(argv, capture_output=True, text=True, check=True)
        .stdout.splitlines()[0]
        .strip()
    )


def prometheus_version() -> str:
    # "prometheus, version 2.42.0+ds (branch: …)"
    return version(["prometheus", "--version"]).split(" (")[0].rsplit(" ", 1)[-1]


def raise_priority() -> None:
    """On a shared machine (builds running beside), CPU starvation would show up in the
    panels as Sluice's latency. A higher priority for this process and what it starts keeps the
    picture about Sluice; it needs root, and without it the run goes on at normal priority."""
    try:
        os.nice(-20)
    except PermissionError:
        print("slo-picture: not root, running at normal CPU priority", file=sys.stderr)


def check_outcomes(outcomes: Counter[str]) -> None:
    """The error panels are the point of the picture: the load must have produced each kind."""
    statuses = Counter()
    for key, count in outcomes.items():
        statuses[key.rsplit(" ", 1)[1]] += count
    print(
        "calls by status: " + ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items())),
        file=sys.stderr,
    )
    missing = [
        name
        for name, ok in [
            ("200", statuses["200"] > 0),
            ("401 (wrong key)", statuses["401"] > 0),
            ("429 (a key's limit, every backend out)", statuses["429"] > 0),
            ("5xx (fault burst)", any(s.startswith("5") and n > 0 for s, n in statuses.items())),
        ]
        if not ok
    ]
    if missing:
        raise LoadError(f"the load produced no {', '.join(missing)}; see the logs")


def run(args: argparse.Namespace, workdir: Path) -> Path:
    if not args.sluice_bin.is_file():
        raise SystemExit(f"slo-picture: no sluice binary at {args.sluice_bin} (set SLUICE_BIN)")
    out = args.out or (workdir / "slo-row.png" if args.check else REPO / "docs/images/slo-row.png")
    row_title, panels = first_row(DASHBOARD)

    raise_priority()
    stack = Stack(args.sluice_bin, workdir, args.scrape_interval)
    try:
        endpoints = stack.start(team_b_requests_per_minute=team_b_limit(args.duration))
        print(
            f"load for {args.duration:g} s on {endpoints.proxy}, prometheus {endpoints.prometheus}",
            file=sys.stderr,
        )
        start = time.time()
        outcomes = drive(endpoints.proxy, stack.keys, FaultTimeline(endpoints.mocks), args.duration)
        end = time.time()
        (workdir / "calls.txt").write_text(
            "".join(f"{n:6d} {k}\n" for k, n in sorted(outcomes.items()))
        )
        check_outcomes(outcomes)
        time.sleep(2 * args.scrape_interval)  # the last samples reach the TSDB

        prometheus = Prometheus(endpoints.prometheus)
        variables = {
            "namespace": ".*",
            "instance": ".*",
            "pool": ".*",
            "client_key": ".*",
            "__rate_interval": args.rate_interval,
        }
        step = args.scrape_interval
        # From the first full rate window: earlier points would show rates still filling up.
        shown_from = start + duration_seconds(args.rate_interval)
        drawn = [
            (panel, panel_series(prometheus, panel, variables, shown_from, end, step))
            for panel in panels
        ]
        caption = (
            f"{version([str(args.sluice_bin), '--version'])} under {args.duration:g} s of load generated by "
            f"scripts/slo-picture; Prometheus {prometheus_version()} scraping its /metrics "
            f"every {args.scrape_interval:g} s; the panels' own queries from deploy/grafana/sluice-dashboard.json "
            f"with every variable at All and $__rate_interval = {args.rate_interval}; plotted with matplotlib."
        )
        render(row_title, drawn, caption, out)
    finally:
        stack.close()
    size = out.stat().st_size
    if size > MAX_PNG_BYTES:
        raise SystemExit(f"slo-picture: {out} is {size} bytes, over {MAX_PNG_BYTES}")
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every process started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="sluice-slo-picture."))
    keep = args.keep_tmp
    try:
        out = run(args, workdir)
        print(f"wrote {out} ({out.stat().st_size // 1024} KB): every panel of the row had data")
        return 0
    except (StackError, FaultError, LoadError, DashboardError) as error:
        print(f"slo-picture: {error}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
