"""The sweep summary's pictures: which setting disentangles best, at a glance.

* each headline metric (``novel_view_gain``, ``identity_kept``, ``equivariance``) against each
  swept parameter: one panel per factor, DC-IGN beside every comparison network, every job a
  hollow point (so the seeds show their spread) and the mean over the jobs at each value a line;
* a heatmap of each headline metric over each pair of swept parameters (the mean over seeds and
  any other swept parameter in each cell), a row of panels per network;
* an Optuna search's objective trial by trial, with the best so far.

A numeric parameter is placed by value, on a log axis when its values are spaced by factors of
ten (0.001, 0.01, 0.1) or span two decades; any other parameter (``dataset=faces,chairs``) gets
evenly spaced categories. Drawn with Pillow, like the project's other charts (dcign/plots.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from dcign import plots
from dcign.run.job_status import FINISHED
from dcign.run.sweep_dirs import DCIGN, HEADLINE, Job, Sweep, as_number

PANEL_WIDTH, PANEL_HEIGHT = 300, 250  # one panel (one factor of one network)
HEADER = 48  # above the panels: the title, then the legend
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 24, 48  # margins around a panel's plotting area
PAD = 14  # between the plotting area's frame and its outermost points
# DC-IGN, then each comparison network in table order (matplotlib's first five colours).
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
GREY, GRID = (150, 150, 150), (232, 232, 232)
# viridis at five points, interpolated linearly: low values dark, high values bright.
COLOUR_MAP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
MAX_CELLS = 12  # a heatmap's rows or columns at most, so that each cell's number stays legible
SMALL, LARGE = plots.font(12), plots.font(14)
Point = tuple[float, float]
Colour = tuple[int, int, int]


def draw_plots(sweep: Sweep, directory: Path) -> list[Path]:
    """Write every picture of ``sweep`` into ``directory`` as PNG; returns their paths."""
    families = [f for f in HEADLINE if any(k.startswith(f + "/") for k in _dcign_metrics(sweep))]
    figures = {
        f"{family}_vs_{parameter}": metric_figure(sweep, family, parameter)
        for family in families
        for parameter in sweep.swept
    }
    # A grid has cells to average over; a search draws its values at random.
    gridded = [p for p in sweep.swept if len(_values(sweep, p)) <= MAX_CELLS] * (not sweep.search)
    for family in families:
        for first, second in itertools.combinations(gridded, 2):
            figures[f"{family}_{first}_x_{second}"] = heatmap_figure(sweep, family, first, second)
    if sweep.search is not None:
        figures["objective_history"] = history_figure(sweep)
    paths = []
    for name, image in figures.items():
        if image is not None:
            directory.mkdir(parents=True, exist_ok=True)
            image.save(directory / f"{name}.png")
            paths.append(directory / f"{name}.png")
    return paths


# ----------------------------------------------------------------------------- axes


@dataclass(frozen=True)
class XAxis:
    """Where each value of a parameter goes across a panel (0 to 1), and the tick labels."""

    positions: dict[str, float]  # raw override value -> position
    ticks: list[tuple[float, str]]
    log: bool = False

    @classmethod
    def of(cls, values: Iterable[str]) -> XAxis:
        """The axis of a parameter's values: by value when they are all numbers, else evenly
        spaced in the order given."""
        distinct = list(dict.fromkeys(values))
        numbers = {value: as_number(value) for value in distinct}
        if None in numbers.values():
            places = {value: (i + 0.5) / len(distinct) for i, value in enumerate(distinct)}
            return cls(places, [(place, value) for value, place in places.items()])
        return cls.numeric({value: float(n) for value, n in numbers.items() if n is not None})

    @classmethod
    def numeric(cls, numbers: dict[str, float]) -> XAxis:
        """Values placed by number, on a log scale when :func:`log_spaced`; a tick at every
        value when there are few, else at round numbers (decades on a log scale)."""
        log = log_spaced(list(numbers.values()))
        scale: Callable[[float], float] = math.log10 if log else float
        low, high = min(map(scale, numbers.values())), max(map(scale, numbers.values()))

        def place(value: float) -> float:
            return 0.5 if high == low else (scale(value) - low) / (high - low)

        if len(numbers) <= 8:
            marks = sorted(set(numbers.values()))
        elif log:
            marks = [10.0**k for k in range(math.ceil(low), math.floor(high) + 1)]
        else:
            marks = plots.ticks(low, high, 5)
        places = {value: place(number) for value, number in numbers.items()}
        return cls(places, [(place(mark), f"{mark:g}") for mark in marks], log)

    def ordered(self) -> list[str]:
        """The values from left to right."""
        return sorted(self.positions, key=self.positions.__getitem__)


def log_spaced(numbers: Sequence[float]) -> bool:
    """Positive values that are powers of ten apart (0.001, 0.01, 1) or span two decades."""
    distinct = sorted(set(numbers))
    if len(distinct) < 2 or distinct[0] <= 0:
        return False
    decades = [math.log10(b / a) for a, b in itertools.pairwise(distinct)]
    by_tens = all(d >= 0.95 and abs(d - round(d)) < 0.05 for d in decades)
    return by_tens or distinct[-1] / distinct[0] >= 100


@dataclass(frozen=True)
class Frame:
    """A panel's plotting area in pixels and the value range it shows upwards."""

    left: float
    top: float
    right: float
    bottom: float
    low: float
    high: float

    @classmethod
    def of_panel(cls, low: float, high: float) -> Frame:
        return cls(LEFT, TOP, PANEL_WIDTH - RIGHT, PANEL_HEIGHT - BOTTOM, low, high)

    def x(self, position: float) -> float:
        return self.left + PAD + position * (self.right - self.left - 2 * PAD)

    def y(self, value: float) -> float:
        share = (value - self.low) / (self.high - self.low)
        return self.bottom - PAD - share * (self.bottom - self.top - 2 * PAD)


def value_range(values: Iterable[float]) -> tuple[float, float]:
    """The range the panels of one figure share, so their heights compare."""
    finite = [value for value in values if math.isfinite(value)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if high - low < 1e-12:
        return low - max(abs(low) * 0.1, 0.5), high + max(abs(high) * 0.1, 0.5)
    return low, high


def draw_frame(
    draw: ImageDraw.ImageDraw, frame: Frame, axis: XAxis, title: str, x_label: str
) -> None:
    """Frame, horizontal grid with value labels, x tick labels, the panel's title and x label."""
    for value in plots.ticks(frame.low, frame.high, 5):
        y = frame.y(value)
        if frame.top <= y <= frame.bottom:
            draw.line([(frame.left, y), (frame.right, y)], fill=GRID)
            draw.text((frame.left - 4, y), f"{value:g}", fill="black", font=SMALL, anchor="rm")
    draw.rectangle([frame.left, frame.top, frame.right, frame.bottom], outline="black")
    for position, label in axis.ticks:
        x = frame.x(position)
        draw.line([(x, frame.bottom), (x, frame.bottom + 4)], fill="black")
        draw.text((x, frame.bottom + 6), label, fill="black", font=SMALL, anchor="ma")
    scale = " (log)" if axis.log else ""
    middle = (frame.left + frame.right) / 2
    draw.text((middle, PANEL_HEIGHT - 6), x_label + scale, fill="black", font=SMALL, anchor="md")
    draw.text((frame.left, frame.top - 6), title, fill="black", font=LARGE, anchor="ld")


# ----------------------------------------------------------------------------- figures


def metric_figure(sweep: Sweep, family: str, parameter: str) -> Image.Image | None:
    """``family`` against ``parameter``: a panel per factor, a colour per network."""
    jobs = [job for job in sweep.jobs if parameter in job.overrides]
    factors = _factors(sweep, family)
    keys = {(net, f): _key(sweep, net, f"{family}/{f}") for net in sweep.networks for f in factors}
    values = [job.value(key) for key in keys.values() if key for job in jobs]
    if not any(math.isfinite(value) for value in values):
        return None
    axis = XAxis.of(job.overrides[parameter] for job in jobs)
    frame = Frame.of_panel(*value_range(values))
    panels = []
    for factor in factors:
        panel = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT), "white")
        draw = ImageDraw.Draw(panel)
        draw_frame(draw, frame, axis, factor, parameter)
        drawn = []
        for index, network in enumerate(sweep.networks):
            key = keys[network, factor]
            if key:
                shift = (index - (len(sweep.networks) - 1) / 2) * 5  # networks side by side
                points, means = _series(frame, axis, jobs, parameter, key, shift)
                drawn.append((COLOURS[index % len(COLOURS)], points, means))
        _draw_series(draw, drawn, means=sweep.search is None)
        panels.append(panel)
    marker = "point" if sweep.search else "series"
    legend = [
        (_shown(net), COLOURS[i % len(COLOURS)], marker) for i, net in enumerate(sweep.networks)
    ]
    return _figure([panels], f"test {family}", legend)


def heatmap_figure(sweep: Sweep, family: str, across: str, down: str) -> Image.Image | None:
    """``family``'s mean in each cell of ``across`` x ``down``: a row of panels per network."""
    jobs = [job for job in sweep.jobs if across in job.overrides and down in job.overrides]
    columns = XAxis.of(job.overrides[across] for job in jobs).ordered()
    rows = XAxis.of(job.overrides[down] for job in jobs).ordered()
    factors = _factors(sweep, family)
    tables = {
        (network, factor): _cell_means(
            jobs, _key(sweep, network, f"{family}/{factor}"), (across, down), columns, rows
        )
        for network in sweep.networks
        for factor in factors
    }
    values = [value for table in tables.values() for line in table for value in line]
    if not any(math.isfinite(value) for value in values):
        return None
    scale = value_range(values)
    grid = [
        [
            _heatmap_panel(
                tables[network, factor],
                (columns, rows),
                (across, down),
                scale,
                f"{_shown(network)}: {factor}",
            )
            for factor in factors
        ]
        for network in sweep.networks
    ]
    image = _figure(grid, f"test {family}, the mean of each cell's jobs")
    _draw_colour_bar(ImageDraw.Draw(image), scale)
    return image


def history_figure(sweep: Sweep) -> Image.Image | None:
    """An Optuna search trial by trial: each finished trial's objective, the best so far, the
    best trial ringed, and the trials without a value as grey crosses at the bottom."""
    search, best = sweep.search, sweep.best_job()
    if search is None or best is None or best.objective is None:
        return None
    scored = {
        job.number: job.objective
        for job in sweep.jobs
        if job.end.status == FINISHED and job.objective is not None
    }
    axis = XAxis.of(str(job.number) for job in sweep.jobs)
    width = 2 * PANEL_WIDTH
    frame = Frame(LEFT, TOP, width - RIGHT, PANEL_HEIGHT - BOTTOM, *value_range(scored.values()))
    panel = Image.new("RGB", (width, PANEL_HEIGHT), "white")
    draw = ImageDraw.Draw(panel)
    draw_frame(draw, frame, axis, search.metric, "trial")
    numbers = sorted(scored)
    running = list(itertools.accumulate((scored[n] for n in numbers), search.pick))
    if len(numbers) > 1:
        points = [
            (frame.x(axis.positions[str(n)]), frame.y(v))
            for n, v in zip(numbers, running, strict=True)
        ]
        draw.line(points, fill=COLOURS[1], width=2)
    for job in sweep.jobs:
        x = frame.x(axis.positions[str(job.number)])
        if job.number in scored:
            _dot(draw, x, frame.y(scored[job.number]), COLOURS[0], filled=True)
        else:
            _cross(draw, x, frame.bottom - PAD / 2)
    x, y = frame.x(axis.positions[str(best.number)]), frame.y(best.objective)
    draw.ellipse([x - 8, y - 8, x + 8, y + 8], outline=COLOURS[3], width=2)
    title = (
        f"Optuna: {search.metric} ({search.direction}), "
        f"best trial {best.number} = {best.objective:.4g}"
    )
    legend = [
        ("trial", COLOURS[0], "dot"),
        ("best so far", COLOURS[1], "line"),
        ("best", COLOURS[3], "ring"),
        ("no value", GREY, "cross"),
    ]
    return _figure([[panel]], title, legend)


# ----------------------------------------------------------------------------- drawing


def _figure(
    grid: Sequence[Sequence[Image.Image]],
    title: str,
    legend: Sequence[tuple[str, Colour, str]] = (),
) -> Image.Image:
    """Panels in rows under a header holding the title and a legend (both cut to the width:
    the size of a figure is its panels')."""
    width = max(sum(panel.width for panel in row) for row in grid)
    image = Image.new("RGB", (width, HEADER + sum(row[0].height for row in grid)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), _fitted(title, width - 16), fill="black", font=LARGE)
    x = 8
    for label, colour, marker in legend:
        _draw_marker(draw, x, 36, colour, marker)
        draw.text((x + 28, 36), label, fill="black", font=SMALL, anchor="lm")
        x += 40 + draw.textlength(label, font=SMALL)
    top = HEADER
    for row in grid:
        left = 0
        for panel in row:
            image.paste(panel, (left, top))
            left += panel.width
        top += row[0].height
    return image


def _fitted(text: str, width: float, font: ImageFont.FreeTypeFont | None = None) -> str:
    """``text``, shortened with an ellipsis to ``width`` pixels of ``font`` (the title's)."""
    font = font or LARGE
    while font.getlength(text) > width and len(text) > 1:
        text = text[:-2] + "…"
    return text


def _draw_marker(
    draw: ImageDraw.ImageDraw, x: float, y: float, colour: Colour, marker: str
) -> None:
    """A legend's sample, 22 pixels wide: a line, a point or both, a dot, a ring or a cross."""
    if marker in ("line", "series"):
        draw.line([(x, y), (x + 22, y)], fill=colour, width=3)
    if marker in ("point", "series"):
        _dot(draw, x + 11, y, colour)
    if marker == "dot":
        _dot(draw, x + 11, y, colour, filled=True)
    if marker == "ring":
        draw.ellipse([x + 3, y - 8, x + 19, y + 8], outline=colour, width=2)
    if marker == "cross":
        _cross(draw, x + 11, y)


def _series(
    frame: Frame, axis: XAxis, jobs: Sequence[Job], parameter: str, key: str, shift: float
) -> tuple[list[Point], list[Point]]:
    """Pixels of every job's value of ``key`` and of the mean at each parameter value."""
    by_value: dict[str, list[float]] = {}
    for job in jobs:
        if math.isfinite(job.value(key)):
            by_value.setdefault(job.overrides[parameter], []).append(job.value(key))
    points = [
        (frame.x(axis.positions[raw]) + shift, frame.y(value))
        for raw, values in by_value.items()
        for value in values
    ]
    means = [
        (frame.x(axis.positions[raw]) + shift, frame.y(_mean(by_value[raw])))
        for raw in axis.ordered()
        if raw in by_value
    ]
    return points, means


def _draw_series(
    draw: ImageDraw.ImageDraw,
    drawn: Sequence[tuple[Colour, list[Point], list[Point]]],
    means: bool,
) -> None:
    """Hollow points of every series first, then the mean lines, which no point may hide
    (none for a search: it draws its values at random, one job each)."""
    for colour, points, _ in drawn:
        for x, y in points:
            _dot(draw, x, y, colour)
    for colour, _, line in drawn if means else ():
        if len(line) > 1:
            draw.line(line, fill=colour, width=3)
        for x, y in line:
            _dot(draw, x, y, colour, filled=True, radius=3)


def _heatmap_panel(
    table: Sequence[Sequence[float]],
    values: tuple[Sequence[str], Sequence[str]],
    parameters: tuple[str, str],
    scale: tuple[float, float],
    title: str,
) -> Image.Image:
    """One network's and factor's cells: ``values`` and ``parameters`` are (across, down)."""
    panel = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT), "white")
    draw = ImageDraw.Draw(panel)
    _draw_cells(draw, table, *values, scale)
    draw.text((LEFT, TOP - 6), title, fill="black", font=LARGE, anchor="ld")
    middle = (LEFT + PANEL_WIDTH - RIGHT) / 2
    draw.text((middle, PANEL_HEIGHT - 6), parameters[0], fill="black", font=SMALL, anchor="md")
    _paste_upright(panel, parameters[1])
    return panel


def _paste_upright(panel: Image.Image, text: str) -> None:
    """``text`` read bottom to top along the panel's left edge, centred on the plotting area."""
    height = PANEL_HEIGHT - TOP - BOTTOM
    text = _fitted(text, height, SMALL)
    label = Image.new("RGB", (math.ceil(SMALL.getlength(text)) + 2, 16), "white")
    ImageDraw.Draw(label).text((1, 8), text, fill="black", font=SMALL, anchor="lm")
    upright = label.rotate(90, expand=True)
    panel.paste(upright, (2, round(TOP + (height - upright.height) / 2)))


def _draw_cells(
    draw: ImageDraw.ImageDraw,
    table: Sequence[Sequence[float]],
    columns: Sequence[str],
    rows: Sequence[str],
    scale: tuple[float, float],
) -> None:
    """A coloured cell per (row, column) with its value written in it; '-' where no job was."""
    left, top, right, bottom = LEFT, TOP, PANEL_WIDTH - RIGHT, PANEL_HEIGHT - BOTTOM
    width, height = (right - left) / len(columns), (bottom - top) / len(rows)
    for r, row in enumerate(rows):
        y = top + r * height
        draw.text((left - 4, y + height / 2), row, fill="black", font=SMALL, anchor="rm")
        for c, value in enumerate(table[r]):
            x = left + c * width
            fill = colour_of(value, scale) if math.isfinite(value) else GRID
            draw.rectangle([x, y, x + width, y + height], fill=fill, outline="white")
            text = f"{value:.3g}" if math.isfinite(value) else "-"
            ink = "black" if sum(fill) > 380 else "white"
            draw.text((x + width / 2, y + height / 2), text, fill=ink, font=SMALL, anchor="mm")
    for c, column in enumerate(columns):
        x = left + (c + 0.5) * width
        draw.text((x, bottom + 6), column, fill="black", font=SMALL, anchor="ma")


def _draw_colour_bar(draw: ImageDraw.ImageDraw, scale: tuple[float, float]) -> None:
    """The colour scale in the header: low value, gradient, high value."""
    low, high = scale
    draw.text((8, 36), f"{low:.3g}", fill="black", font=SMALL, anchor="lm")
    start = 16 + draw.textlength(f"{low:.3g}", font=SMALL)
    for i in range(160):
        colour = colour_of(low + (high - low) * i / 159, scale)
        draw.line([(start + i, 30), (start + i, 42)], fill=colour)
    draw.text((start + 168, 36), f"{high:.3g}", fill="black", font=SMALL, anchor="lm")


def colour_of(value: float, scale: tuple[float, float]) -> Colour:
    """``value``'s colour on the map from ``scale``'s low (dark) to its high (bright)."""
    low, high = scale
    share = min(max((value - low) / (high - low), 0.0), 1.0) * (len(COLOUR_MAP) - 1)
    index = min(int(share), len(COLOUR_MAP) - 2)
    (r0, g0, b0), (r1, g1, b1), t = COLOUR_MAP[index], COLOUR_MAP[index + 1], share - index
    return round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t)


def _dot(
    draw: ImageDraw.ImageDraw,
    x: float,
    y: float,
    colour: Colour,
    filled: bool = False,
    radius: float = 4,
) -> None:
    box = [x - radius, y - radius, x + radius, y + radius]
    draw.ellipse(box, fill=colour if filled else None, outline=colour, width=2)


def _cross(draw: ImageDraw.ImageDraw, x: float, y: float, size: float = 4) -> None:
    draw.line([(x - size, y - size), (x + size, y + size)], fill=GREY, width=2)
    draw.line([(x - size, y + size), (x + size, y - size)], fill=GREY, width=2)


# ----------------------------------------------------------------------------- data


def _cell_means(
    jobs: Sequence[Job],
    key: str | None,
    parameters: tuple[str, str],
    columns: Sequence[str],
    rows: Sequence[str],
) -> list[list[float]]:
    """The mean of ``key`` over the jobs of each (row, column) pair of parameter values."""
    across, down = parameters
    cells: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        cells.setdefault((job.overrides[across], job.overrides[down]), []).append(
            job.value(key) if key else math.nan
        )
    return [[_mean(cells.get((column, row), [])) for column in columns] for row in rows]


def _dcign_metrics(sweep: Sweep) -> list[str]:
    return [metric for network, metric in sweep.metric_names.values() if network == DCIGN]


def _factors(sweep: Sweep, family: str) -> list[str]:
    """The factors ``family`` was logged for, by any network (``family/<factor>``)."""
    factors = (
        metric.partition("/")[2]
        for _, metric in sweep.metric_names.values()
        if metric.startswith(family + "/")
    )
    return sorted(set(factors))


def _key(sweep: Sweep, network: str, metric: str) -> str | None:
    """The logged key of ``network``'s ``metric``, or None when no job logged it."""
    return next((k for k, name in sweep.metric_names.items() if name == (network, metric)), None)


def _values(sweep: Sweep, parameter: str) -> set[str]:
    return {job.overrides[parameter] for job in sweep.jobs if parameter in job.overrides}


def _mean(values: Iterable[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else math.nan


def _shown(network: str) -> str:
    return "DC-IGN" if network == DCIGN else network
