"""Inline SVG plots (matplotlib, Agg): margin distributions, per-layer error bars and
training trajectories. Text in the SVG is XML-escaped by matplotlib."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .summary import BINS_PER_DECADE, EXACT

plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                     "axes.spines.right": False})
COLOURS = {"agree": "#2e7d32", "kink": "#b08900", "diverge": "#c62828", "nan": "#6a1b9a"}


def _svg(fig: plt.Figure) -> str:
    buffer = io.StringIO()
    fig.set_layout_engine("tight")  # one layout pass; bbox_inches="tight" would draw twice
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype for inlining


def margin_histograms(bins: Mapping[tuple[str, str], Mapping[int, int]]) -> str:
    """log10(error / tolerance): small multiples, one panel per family on a shared x axis,
    each dtype a filled histogram in its own colour; the dashed line at 0 is the tolerance.
    ``bins``: per (family, dtype), how many margins fell in each quarter decade
    (``summary.margin_bin``), so the plot is drawn from counts, never from the records."""
    counts = {key: dict(b) for key, b in sorted(bins.items()) if b}
    occupied = [k for b in counts.values() for k in b]
    low = math.floor(min(occupied) / BINS_PER_DECADE) - 1
    high = max(1, math.ceil((max(occupied) + 1) / BINS_PER_DECADE) + 1)
    edges = [low + i / BINS_PER_DECADE for i in range(BINS_PER_DECADE * (high - low) + 1)]
    families = sorted({family for family, _ in counts})
    dtypes = sorted({dtype for _, dtype in counts})
    colours = dict(zip(dtypes, DTYPE_COLOURS * (len(dtypes) // len(DTYPE_COLOURS) + 1),
                       strict=False))
    ncols = min(len(families), 4)
    nrows = math.ceil(len(families) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5, 1.6 * nrows + 0.9), sharex=True,
                             squeeze=False)
    for ax, family in zip(axes.flat, families, strict=False):
        for dtype in dtypes:
            if (family, dtype) in counts:
                _binned(ax, counts[(family, dtype)], edges, colours[dtype], dtype)
        ax.axvline(0, color="#c62828", linestyle="--", linewidth=1)
        ax.set_title(family, fontsize=9, loc="left")
        ax.tick_params(labelsize=7, labelbottom=True)  # every panel labelled (hidden ones too)
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[d], alpha=0.6) for d in dtypes]
    axes.flat[0].legend(handles, dtypes, loc="upper left", fontsize=7, frameon=False)
    fig.supxlabel("log10(error / tolerance)   (dashed: the tolerance; left of it agrees; "
                  f"exact agreement at {math.log10(EXACT):.0f})", fontsize=8)
    fig.supylabel("tensors", fontsize=8)
    return _svg(fig)


def _binned(ax: plt.Axes, counts: Mapping[int, int], edges: Sequence[float], colour: str,
            label: str) -> None:
    """A filled histogram of pre-binned counts (bin ``k`` spans ``[k / 4, (k + 1) / 4)``)."""
    centres = [(k + 0.5) / BINS_PER_DECADE for k in counts]
    ax.hist(centres, bins=list(edges), weights=list(counts.values()), color=colour, alpha=0.45,
            edgecolor=colour, linewidth=0.8, label=label)


DTYPE_COLOURS = ["#1565c0", "#ef6c00", "#6a1b9a", "#00838f"]


def _plain_log_ticks(axis: matplotlib.axis.Axis) -> None:
    """Decades labelled ``1e-6`` in plain text (mathtext labels cost 10 ms each)."""
    axis.set_major_locator(LogLocator(base=10, numticks=8))
    axis.set_minor_locator(LogLocator(base=10, subs=(), numticks=1))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"1e{math.log10(v):.0f}" if v > 0 else ""))
    axis.set_minor_formatter(NullFormatter())  # else a skipped decade gets a "10^-6" label


def layer_bars(names: Sequence[str], margins: Sequence[float], marked: Sequence[str]) -> str:
    """Max error / tolerance per tensor of one comparison, on a log scale, threshold 1;
    ``marked`` tensors are where the divergence enters."""
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(names) + 0.9))
    values = [max(m, EXACT) if math.isfinite(m) else 1e12 for m in margins]
    floor = min(min(values), 1.0) / 10
    colours = ["#c62828" if v > 1 else "#2e7d32" for v in values]
    y = range(len(names))
    ax.barh(list(y), [v - floor for v in values], color=colours, left=floor)
    ax.set_xscale("log")
    ax.set_xlim(floor, max(max(values), 1.0) * 10)
    _plain_log_ticks(ax.xaxis)
    ax.set_yticks(list(y), labels=[f"{n}  ◀ enters here" if n in marked else n for n in names])
    ax.invert_yaxis()
    ax.axvline(1, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(f"max error / tolerance (dashed: tolerance; exact agreement drawn at {EXACT:g})")
    return _svg(fig)


def trajectories(series: Mapping[str, Sequence[tuple[int, float]]]) -> str:
    """Worst error / tolerance of the parameters after each training step, per case."""
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    for label, points in sorted(series.items()):
        steps, values = zip(*sorted(points), strict=True)
        ax.plot(steps, [max(v, 1e-20) for v in values], marker="o", markersize=3, label=label)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.axhline(1, color="#c62828", linestyle="--", linewidth=1)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("max error / tolerance")
    if series:  # a legend with no labelled line is a matplotlib UserWarning
        ax.legend(fontsize=7, frameon=False, ncols=2)
    return _svg(fig)
