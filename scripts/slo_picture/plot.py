"""The row as one PNG, laid out on Grafana's 24-column grid with the panels' own positions,
titles, legends and units, in colours close to Grafana's dark theme."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter  # noqa: E402

from dashboard import Panel, Series  # noqa: E402

PAGE = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
GRID = "#2c3235"
# Grafana's classic palette, in its order.
PALETTE = [
    "#7eb26d",
    "#eab839",
    "#6ed0e0",
    "#ef843c",
    "#e24d42",
    "#1f78c1",
    "#ba43a9",
    "#705da0",
    "#508642",
    "#cca300",
]
DPI = 80
# Width of Grafana's 24-column grid and height of one of its units, in inches; room for the
# row's title above and the caption below; margins of a plot inside its panel.
GRID_WIDTH = 15.0
UNIT_HEIGHT = 0.36
HEADER = 0.4
FOOTER = 0.25
PLOT_LEFT = 0.75
PLOT_RIGHT = 0.15
PLOT_ABOVE = 0.3
PLOT_BELOW = 0.75


def seconds(value: float, _position: object = None) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.3g} s"


def requests_per_second(value: float, _position: object = None) -> str:
    return f"{value:.3g} req/s"


def axis_format(unit: str):
    if unit == "percentunit":
        return PercentFormatter(xmax=1.0, decimals=None)
    if unit == "s":
        return FuncFormatter(seconds)
    if unit == "reqps":
        return FuncFormatter(requests_per_second)
    return FuncFormatter(lambda value, _p: f"{value:.3g}")


def draw_panel(ax, panel: Panel, series: list[Series]) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.tick_params(colors=MUTED, labelsize=7, length=0)
    ax.set_title(panel.title, loc="left", color=TEXT, fontsize=9, fontweight="bold", pad=6)
    lines = []
    for index, one in enumerate(series):
        times = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in one.times]
        lines += ax.plot(times, one.values, color=PALETTE[index % len(PALETTE)], linewidth=1.2)
    ax.yaxis.set_major_formatter(axis_format(panel.unit))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=3))
    # Like Grafana's soft minimum of 0, with room for a line that stays at 0 to be seen.
    top = ax.get_ylim()[1]
    ax.set_ylim(bottom=-0.02 * top, top=top)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=7, tz=dt.timezone.utc))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.timezone.utc))
    first, last = series[0].times[0], series[0].times[-1]
    ax.set_xlim(
        dt.datetime.fromtimestamp(first, dt.timezone.utc),
        dt.datetime.fromtimestamp(last, dt.timezone.utc),
    )
    # Labels passed explicitly: matplotlib would drop a label starting with "_" (such as the
    # `_none` pool or client key of calls refused before those were known).
    ax.legend(
        lines,
        [one.legend for one in series],
        loc="upper left",
        bbox_to_anchor=(-0.01, -0.1),
        ncol=min(len(series), 6),
        frameon=False,
        fontsize=7,
        labelcolor=TEXT,
        handlelength=1.2,
        columnspacing=1.2,
    )


def render(
    row_title: str,
    panels: list[tuple[Panel, list[Series]]],
    caption: str,
    out: Path,
) -> None:
    top = min(panel.y for panel, _ in panels)
    rows = max(panel.y + panel.h for panel, _ in panels) - top
    width = GRID_WIDTH
    height = HEADER + rows * UNIT_HEIGHT + FOOTER
    figure = plt.figure(figsize=(width, height), facecolor=PAGE, dpi=DPI)
    for panel, series in panels:
        # The panel's cell on the grid, in inches from the top left, then the plot inside it:
        # room on the left for the tick labels, above for the title, below for the legend.
        left = panel.x / 24 * width + PLOT_LEFT
        right = (panel.x + panel.w) / 24 * width - PLOT_RIGHT
        cell_top = HEADER + (panel.y - top) * UNIT_HEIGHT
        plot_top = cell_top + PLOT_ABOVE
        plot_bottom = cell_top + panel.h * UNIT_HEIGHT - PLOT_BELOW
        ax = figure.add_axes(
            (
                left / width,
                1 - plot_bottom / height,
                (right - left) / width,
                (plot_bottom - plot_top) / height,
            )
        )
        draw_panel(ax, panel, series)
    figure.text(
        0.008,
        1 - 0.12 / height,
        row_title,
        color=TEXT,
        fontsize=12,
        fontweight="bold",
        ha="left",
        va="top",
    )
    figure.text(0.008, 0.08 / height, caption, color=MUTED, fontsize=7, ha="left", va="bottom")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, facecolor=PAGE, dpi=DPI)
    plt.close(figure)
