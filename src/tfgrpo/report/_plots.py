"""The report's plots, drawn by matplotlib (Agg, no display) and returned as inline SVG text: glyphs as
paths, so the file needs no font and no network."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the report draws its plots with matplotlib: pip install 'tfgrpo[report]'") from None
    matplotlib.use("Agg", force=True)
    matplotlib.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "tfgrpo", "font.size": 9})
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG goes inside HTML


def _figure(height: float = 2.8) -> tuple[Any, Any]:
    return _pyplot().subplots(figsize=(7.0, height))


def lines(
    x: Sequence[float], series: dict[str, Sequence[float | None]], xlabel: str, ylabel: str, right: dict | None = None
) -> str:
    """One line per series over `x`; `right`: series on a second y axis ({"label": ..., "series": {...}})."""
    fig, ax = _figure()
    for name, ys in series.items():
        ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)  # steps are whole numbers
    handles, labels = ax.get_legend_handles_labels()
    if right:
        twin = ax.twinx()
        for name, ys in right["series"].items():
            twin.plot(x, ys, marker="s", markersize=3, linestyle="--", color="tab:red", label=name)
        twin.set_ylabel(right["label"])
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _svg(fig)


def histogram(values: Sequence[float], xlabel: str) -> str:
    fig, ax = _figure(2.4)
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="tab:blue", alpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("experiences")
    ax.grid(alpha=0.3)
    return _svg(fig)


def intervals(
    names: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    xlabel: str,
    points: Sequence[Sequence[float]] | None = None,
    highlight: str | None = None,
    zero_line: bool = False,
) -> str:
    """A forest plot: one row per name, its mean with a 95% interval, and optional dots (one per seed)."""
    fig, ax = _figure(0.9 + 0.38 * len(names))
    rows = list(range(len(names)))[::-1]
    for row, name, mean, low, high in zip(rows, names, means, lows, highs):
        color = "tab:red" if name == highlight else "tab:blue"
        ax.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt="o", color=color, capsize=3)
    if points:
        for row, dots in zip(rows, points):
            ax.scatter(dots, [row] * len(dots), s=12, color="black", alpha=0.6, zorder=3, marker="x")
    if zero_line:
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_yticks(rows, names)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    return _svg(fig)


def heatmap(values: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str], label: str) -> str:
    """A matrix as coloured cells with their values written in (rows top to bottom), on a 0..1 scale."""
    fig, ax = _figure(0.9 + 0.36 * len(rows))
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    fig.colorbar(image, ax=ax, label=label, fraction=0.04)
    return _svg(fig)


def bands(
    x: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], ylabel: str
) -> str:
    """One line per series over the labels `x` with a shaded band: {name: (means, lows, highs)}."""
    fig, ax = _figure()
    positions = list(range(len(x)))
    for name, (means, lows, highs) in series.items():
        (line,) = ax.plot(positions, means, marker="o", markersize=3, label=name)
        ax.fill_between(positions, lows, highs, color=line.get_color(), alpha=0.15)
    ax.set_xticks(positions, x, rotation=20)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _svg(fig)
