"""Geometry of the insights page's stacked bar charts, drawn by the template as inline SVG.

Server-rendered: the admin page needs no script and nothing from a CDN, and
the same numbers are in a table beside each chart for screen readers.
"""

from dataclasses import dataclass

from chat.insights import STATUSES, ChannelCounts

# Okabe-Ito colours: told apart with the common colour-vision deficiencies.
STATUS_COLOURS = {
    "matched": "#009E73",
    "unmatched": "#999999",
    "ambiguous": "#E69F00",
    "withheld": "#0072B2",
}

WIDTH, HEIGHT = 760, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 28
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_X_LABELS = 10


@dataclass(frozen=True)
class Segment:
    status: str
    count: int
    y: float
    height: float
    colour: str


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    title: str  # the tooltip: the day and its counts
    segments: list[Segment]


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class StackedBarChart:
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_bottom: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_labels: list[Tick]
    summary: str  # what the chart says, for aria-label


def nice_ceiling(value: int) -> tuple[int, int]:
    """An axis top at least ``value``, and its step (1, 2 or 5 times 10^n, 5 steps at most)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            candidate = step * factor
            if candidate * 5 >= value:
                top = -(-value // candidate) * candidate
                return max(top, candidate), candidate
        step *= 10


def stacked_bar_chart(counts: ChannelCounts) -> StackedBarChart:
    days = counts.days
    top, step = nice_ceiling(max((d.total for d in days), default=0))
    slot = PLOT_WIDTH / max(len(days), 1)
    bar_width = max(slot * 0.8, 1.0)
    scale = PLOT_HEIGHT / top
    plot_bottom = TOP + PLOT_HEIGHT
    bars = []
    for index, day in enumerate(days):
        y = float(plot_bottom)
        segments = []
        for status in STATUSES:
            count = day.counts[status]
            if not count:
                continue
            height = count * scale
            y -= height
            segments.append(Segment(status, count, y, height, STATUS_COLOURS[status]))
        detail = ", ".join(f"{s.count} {s.status}" for s in segments) or "none"
        bars.append(
            Bar(
                x=LEFT + index * slot + (slot - bar_width) / 2,
                width=bar_width,
                title=f"{day.day.isoformat()}: {detail}",
                segments=segments,
            )
        )
    every = -(-len(days) // MAX_X_LABELS) if days else 1
    x_labels = [
        Tick(LEFT + index * slot + slot / 2, day.day.strftime("%d %b"))
        for index, day in enumerate(days)
        if index % every == 0
    ]
    y_ticks = [Tick(plot_bottom - value * scale, str(value)) for value in range(0, top + 1, step)]
    totals = ", ".join(f"{counts.totals.get(s, 0)} {s}" for s in STATUSES)
    span = f"{days[0].day.isoformat()} to {days[-1].day.isoformat()}" if days else "no days"
    return StackedBarChart(
        width=WIDTH,
        height=HEIGHT,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        plot_bottom=plot_bottom,
        bars=bars,
        y_ticks=y_ticks,
        x_labels=x_labels,
        summary=f"{counts.channel}, conversations per day from {span}: {totals}.",
    )
