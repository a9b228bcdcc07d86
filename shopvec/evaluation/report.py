"""Evaluation results as a text table, as JSON and as a bar plot (PNG).

Results are nested ``scenario -> method -> metric -> value``; chance levels, when given, are
``scenario -> metric -> value`` and appear as an extra row (table) or as marks (plot).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "CHANCE_ROW",
    "DEFAULT_PLOT_METRICS",
    "Chance",
    "Results",
    "plot_bars",
    "render_json",
    "render_table",
]

Results = Mapping[str, Mapping[str, Mapping[str, float]]]
Chance = Mapping[str, Mapping[str, float]]

CHANCE_ROW = "(chance)"
DEFAULT_PLOT_METRICS = ("P@1", "R@10", "MRR@10", "nDCG@10", "MAP")
"""A readable plot has few bars a group; the table and the JSON carry the rest."""


def _metrics_of(results: Results, scenario: str) -> list[str]:
    # Union in first-seen order, so the caller's order (e.g. ``metric_names``) is kept.
    seen: dict[str, None] = {}
    for values in results[scenario].values():
        seen.update(dict.fromkeys(values))
    return list(seen)


def render_table(
    results: Results,
    chance: Chance | None = None,
    *,
    metrics: Sequence[str] | None = None,
    digits: int = 3,
) -> str:
    """One block a scenario: a row a method, a column a metric; '-' where a value is missing."""
    blocks = []
    for scenario, methods in results.items():
        names = list(metrics) if metrics is not None else _metrics_of(results, scenario)
        rows: list[tuple[str, Mapping[str, float]]] = list(methods.items())
        if chance is not None and scenario in chance:
            rows.append((CHANCE_ROW, chance[scenario]))
        cells = [["method", *names]]
        for method, values in rows:
            cells.append(
                [method, *(f"{values[n]:.{digits}f}" if n in values else "-" for n in names)]
            )
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines = [f"== {scenario} =="]
        for index, row in enumerate(cells):
            first = row[0].ljust(widths[0])
            lines.append(
                "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
            )
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def render_json(results: Results, chance: Chance | None = None, *, indent: int = 2) -> str:
    """``{"results": ..., "chance": ...}`` for machines; key order is kept."""
    payload = {
        "results": {s: {m: dict(v) for m, v in methods.items()} for s, methods in results.items()},
        "chance": {s: dict(v) for s, v in (chance or {}).items()},
    }
    return json.dumps(payload, indent=indent, ensure_ascii=False)


def plot_bars(
    results: Results,
    path: str | Path,
    chance: Chance | None = None,
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    columns: int | None = None,
) -> Path:
    """Grouped bars, one panel a scenario: metrics along x, one bar a method, chance as a dash.

    Panels sit in one row, or in rows of ``columns``. Draws on a bare ``Figure`` with the Agg
    canvas, so no pyplot state or display is involved.
    """
    path = Path(path)
    scenarios = list(results)
    if not scenarios:
        raise ValueError("nothing to plot: no scenarios")
    across = min(columns or len(scenarios), len(scenarios))
    down = -(-len(scenarios) // across)
    figure = Figure(
        figsize=(max(6.0, 4.5 * across), 4.2 if down == 1 else 0.8 + 3.4 * down),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(down, across, sharey=True, squeeze=False)
    axes = [ax for row in grid for ax in row][: len(scenarios)]
    for spare in [ax for row in grid for ax in row][len(scenarios) :]:
        spare.set_visible(False)
    # A method keeps its colour in every panel.
    every_method = dict.fromkeys(m for methods in results.values() for m in methods)
    colour = {m: f"C{i % 10}" for i, m in enumerate(every_method)}
    for ax, scenario in zip(axes, scenarios, strict=True):
        present = _metrics_of(results, scenario)
        wanted = metrics if metrics is not None else DEFAULT_PLOT_METRICS
        names = [n for n in wanted if n in present] or present
        methods = list(results[scenario])
        width = 0.8 / max(len(methods), 1)
        for i, method in enumerate(methods):
            values = results[scenario][method]
            at = [x for x, n in enumerate(names) if n in values]  # a missing value draws no bar
            xs = [x - 0.4 + width * (i + 0.5) for x in at]
            ax.bar(xs, [values[names[x]] for x in at], width, label=method, color=colour[method])
        if chance is not None and scenario in chance:
            level = chance[scenario]
            at = [x for x, n in enumerate(names) if n in level]
            if at:
                ax.hlines(
                    [level[names[x]] for x in at],
                    [x - 0.45 for x in at],
                    [x + 0.45 for x in at],
                    colors="black",
                    linestyles="dashed",
                    label="chance",
                )
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_ylim(0, 1)
        ax.set_title(scenario)
        ax.grid(axis="y", alpha=0.3)
    for row in grid:
        row[0].set_ylabel("score")
    # One legend for all panels, below them, so that it hides no bar.
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    figure.legend(
        list(entries.values()),
        list(entries),
        loc="outside lower center",
        ncols=min(len(entries), 6),
        fontsize="small",
    )
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path
