"""The accuracy figure: grouped bars per dataset, one bar per model, bootstrap error bars.

Laid out like Med-RLVR's Figure 3 so a reproduction can be compared with the paper by eye; a side
panel shows the headline paired difference (RLVR minus SFT, with its 95% interval) when there is
one, since overlapping error bars of two bars say little about the pair. Uses the Agg backend, so it
works on headless training nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def plot_accuracy_bars(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | Path,
    *,
    dataset_order: Sequence[str] | None = None,
    model_order: Sequence[str] | None = None,
    title: str = "Accuracy (error bars: bootstrap std)",
    baseline_label: str = "random",
    headline: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Draw `results[model][dataset] = {"accuracy": a, "accuracy_std": s}` (fractions) as percent bars.

    Error bars: `bar_errors` (the std, or the Wilson interval at accuracy 0 or 1).
    Models are bars within each dataset group (in `model_order`, else insertion order); a missing
    (model, dataset) pair leaves a gap; `baseline_label` (the random-guess bar) is drawn in grey.
    `headline`, paired entries (`model_a`, `model_b`, `dataset`, `diff`, `ci95`, `mcnemar_p`; one
    per dataset), adds a panel with each difference in points; without them there is no panel.
    Returns the written path (format from its suffix).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not results:
        raise ValueError("plot_accuracy_bars: no results to plot")
    models = list(model_order or results)
    datasets = list(dataset_order or dict.fromkeys(d for per_model in results.values() for d in per_model))
    width = 0.8 / len(models)
    centers = np.arange(len(datasets))

    width_bars = max(5.0, 0.8 * len(datasets) * len(models))
    if headline:
        fig, (ax, side) = plt.subplots(
            1, 2, figsize=(width_bars + 3.0, 4.5), gridspec_kw={"width_ratios": [width_bars, 3.0]}
        )
        _draw_headline(side, headline)
    else:
        fig, ax = plt.subplots(figsize=(width_bars, 4.5))
    cmap = plt.get_cmap("tab10")
    for index, model in enumerate(models):
        means = [100 * results[model].get(d, {}).get("accuracy", np.nan) for d in datasets]
        below, above = zip(*(bar_errors(results[model].get(d, {})) for d in datasets), strict=True)
        color = "0.7" if model == baseline_label else cmap(index % 10)
        offsets = centers - 0.4 + width * (index + 0.5)
        bars = ax.bar(offsets, means, width, yerr=[below, above], capsize=3, label=model, color=color)
        for bar, mean, std in zip(bars, means, above, strict=True):
            if not np.isnan(mean):  # label above the error bar, so the two never overlap
                ax.annotate(
                    f"{mean:.1f}",
                    (bar.get_x() + bar.get_width() / 2, mean + std),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
    ax.set_xticks(centers, datasets)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    _figure_title(fig, title)
    # Below the axes, so no bar (accuracy can reach 100%) is ever hidden behind it.
    ax.legend(fontsize=8, ncols=min(len(models), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    logger.info("wrote accuracy figure to %s", out)
    return out


TITLE_FONT_SIZE = 10


def _figure_title(fig: Any, title: str) -> None:
    """The title over the whole figure, wrapped to its width: over one axis, a long title ran past a
    narrow chart (one dataset, few models) and over the headline panel."""
    import textwrap

    width_inches = fig.get_size_inches()[0]
    chars = max(20, int(width_inches * 72 / (0.6 * TITLE_FONT_SIZE)))  # a character is about 0.6 em wide
    fig.suptitle("\n".join(textwrap.wrap(title, chars)), fontsize=TITLE_FONT_SIZE)


def bar_errors(entry: Mapping[str, Any]) -> tuple[float, float]:
    """The error bar below and above one accuracy bar (points): the bootstrap std, or at accuracy 0 or
    1, where that std is 0 and a failed run would look exact, the 95% Wilson interval
    (`accuracy_wilson95`)."""
    accuracy, wilson = entry.get("accuracy"), entry.get("accuracy_wilson95")
    if wilson is not None and accuracy in (0.0, 1.0):
        return max(0.0, 100 * (accuracy - wilson[0])), max(0.0, 100 * (wilson[1] - accuracy))
    std = 100 * entry.get("accuracy_std", 0.0)
    return std, std


def _draw_headline(ax: Any, entries: Sequence[Mapping[str, Any]]) -> None:
    """Each dataset's difference (points) with its 95% paired-bootstrap interval and McNemar p."""
    import numpy as np

    diffs = np.array([100 * e["diff"] for e in entries])
    lows = np.array([100 * e["ci95"][0] for e in entries])
    highs = np.array([100 * e["ci95"][1] for e in entries])
    positions = np.arange(len(entries))
    ax.errorbar(positions, diffs, yerr=[diffs - lows, highs - diffs], fmt="o", color="black", capsize=4)
    ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle="--")
    for x, entry, high in zip(positions, entries, highs, strict=True):
        ax.annotate(
            f"{100 * entry['diff']:+.1f}\np={entry['mcnemar_p']:.2g}",
            (x, high),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_xticks(positions, [e["dataset"] for e in entries])
    ax.set_xlim(-0.6, len(entries) - 0.4)
    ax.margins(y=0.25)
    first = entries[0]
    ax.set_ylabel(f"{first['model_a']} - {first['model_b']} (points)")
    ax.set_title("RLVR - SFT, 95% paired CI", fontsize=9)
