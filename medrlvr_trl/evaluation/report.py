"""What results.json and results.md hold: `EvalReport`, the scoring rules in words, the tables,
and the warnings a reader must see before the numbers (a failed run, a letter prior).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from medrlvr_trl.data import NEAR_DUPLICATE_THRESHOLD, NGRAM_WORDS
from medrlvr_trl.evaluation.answers import ACCURACY_RULE, LENIENT_SOURCES, UNPARSED
from medrlvr_trl.evaluation.comparisons import headline_entries, interval_and_p_disagree
from medrlvr_trl.evaluation.specs import RANDOM_LABEL

CONSTANT_LETTER_LABEL = "constant letter"
"""The results.md row of `constant_letter_baseline` (results.json: the top-level key `constant_letter`)."""
UNPARSED_WARNING_RATE = 0.5
"""A model with no letter in more than this share of its answers gets a warning (a failed run)."""
MAJORITY_LETTER_SHARE = 0.5
"""A model naming one letter in more than this share of its answers gets a warning (a letter prior)."""
_STRICT_TEXT = (
    "cot: the training verifier (format mode 'paper', or the mode in the model's run_info.json, "
    "models[*].verifier_mode) on the whole completion, generated to EOS (or "
    "max_new_tokens), so only whitespace may follow </answer>; direct: the <answer> section if any, "
    "else the first line, read with the verifier's letter rules; loglikelihood: the option letter "
    "with the largest log-likelihood as the next token after the prompt, as lm-evaluation-harness "
    "scores multiple_choice tasks (the same letter under both rules)"
)
_STOPPED_TEXT = (
    "; stop_at_answer_close was on, so cot generation stopped at the first </answer> and text after "
    "the tags was never generated: strict could not judge it"
)
_LENIENT_TEXT = (
    "anything may follow the first </answer>; the strict reader on the text up to there; in cot mode "
    "the verifier's letter rules on a complete <answer> section whose surrounding format failed ('answer "
    "tag'); else MMLU-Pro's answer patterns ('answer is (X)', the last 'Answer: X'), limited to the "
    "question's letters, only inside <answer> when it holds text, never a hedge ('B or C'), the article "
    "'A', a unit ('37°C') or the start of another option's text ('E. coli'); no last-standalone-letter "
    "rule"
)


def scoring_rules(*, stop_at_answer_close: bool) -> dict[str, str]:
    """What each number means, in words, for `results.json` and the legend of `results.md`."""
    return {
        "accuracy_rule": ACCURACY_RULE,
        "strict": _STRICT_TEXT + (_STOPPED_TEXT if stop_at_answer_close else ""),
        "lenient": _LENIENT_TEXT,
        "unparsed_rate": "share of questions with no letter under the lenient rule; wrong under both "
        "rules, never replaced by a random guess",
        "lenient_sources": "verifier: the strict reader; answer tag: the verifier's letter rules on a "
        "complete <answer> section; answer is / answer: MMLU-Pro's patterns; loglikelihood: the most "
        f"likely letter; {UNPARSED}: no letter",
        "accuracy_std": "std of the accuracy over bootstrap resamples of the questions; random row: std "
        "of a uniform guesser's accuracy, sqrt(sum p(1-p))/n with p = 1/options",
        "constant_letter": "always naming the dataset's most frequent gold letter (in brackets): what a "
        "letter prior scores with no knowledge, the floor to beat (random is lower when gold letters are "
        "uneven); +- sqrt(p(1-p)/n)",
        "majority_letter": f"a model naming one letter in more than {MAJORITY_LETTER_SHARE:.0%} of its "
        "answers: its accuracy may be a letter prior; compare it with the constant-letter row and the "
        "option shifts",
        "interval_vs_p": "When the interval and the McNemar p-value disagree, trust the p-value: the "
        "percentile bootstrap interval is too narrow with few questions or few discordant ones (only A "
        "right + only B right), while the exact McNemar test holds at any n. An interval that leaves 0 out "
        "with p >= 0.05 is a difference not shown; an interval that holds 0 with p < 0.05 is a difference "
        "shown, whose size the interval bounds only roughly; look at the discordant counts",
        "wilson": "at accuracy 0 or 1 the bootstrap std is 0, so the cell shows the 95% Wilson interval "
        "[low, high] instead",
        "paired": "A minus B on the same questions (strict): 95% paired-bootstrap percentile interval, "
        "two-sided exact McNemar p-value",
        "letter_distribution": "Strict letters of each model's answers to the options as given "
        f"('{UNPARSED}': no letter), next to the gold letters",
        "option_permutations": "Shift s moves option i to position (i + s) mod n and the gold letter "
        "follows its text; accuracy per shift (strict); consistency: share of questions whose strict "
        "answer names the same option text under every shift, a question with no option named under "
        "some shift counting as inconsistent",
        "accuracy_dedup": "Strict accuracy with within-set duplicates removed: questions equal after "
        "normalising case, whitespace and punctuation count once, the first one kept",
        "contamination": "Test questions also in the training set: exact, equal after normalising case, "
        f"whitespace and punctuation; near, not exact but at least {NEAR_DUPLICATE_THRESHOLD:.0%} of "
        f"the question's distinct word {NGRAM_WORDS}-grams occur in training questions (questions "
        f"under {NGRAM_WORDS} words count only when exact)",
    }


def chart_title(*, stop_at_answer_close: bool) -> str:
    """The Figure-3 title, naming the one rule every bar uses."""
    generated = "stopped at </answer>" if stop_at_answer_close else "generated to EOS"
    return (
        f"Accuracy, {ACCURACY_RULE} rule (cot: training verifier, {generated}); "
        "error bars: bootstrap std (at 0 or 100%: 95% Wilson interval), random: analytic"
    )


def _cells(values: Iterable[str]) -> str:
    return "| " + " | ".join(values) + " |"


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table: the header, its rule and one line per row."""
    return [_cells(columns), "|" + " --- |" * len(columns), *(_cells(row) for row in rows)]


def _section(title: str, legend: str | None, *blocks: Sequence[str]) -> list[str]:
    """A results.md section: a blank line, the heading, the legend sentence (if any), then each block
    (a table, a list) after a blank line."""
    lines = ["", f"## {title}"]
    if legend is not None:
        lines += ["", f"{legend}."]
    for block in blocks:
        lines += ["", *block]
    return lines


def _percent(value: float, std: float | None = None) -> str:
    return f"{100 * value:.1f}" + ("" if std is None else f" +- {100 * std:.1f}")


def _accuracy_cell(accuracy: float, std: float, wilson: Sequence[float] | None) -> str:
    """ "a +- std", or at accuracy 0 or 1 (where the bootstrap std is 0) "a [low, high]", the Wilson
    interval."""
    if wilson is not None and accuracy in (0.0, 1.0):
        return f"{_percent(accuracy)} [{_percent(wilson[0])}, {_percent(wilson[1])}]"
    return _percent(accuracy, std)


def _constant_letter_row(constant: Mapping[str, Mapping[str, Any]], datasets: Sequence[str]) -> list[str]:
    """The best-constant-letter row of the accuracy table: both rules read the same letter."""
    cells = [CONSTANT_LETTER_LABEL]
    for d in datasets:
        v = constant.get(d)
        if v is None:
            cells += ["-"] * 3
            continue
        score = f"{_percent(v['accuracy'], v['accuracy_std'])} ({v['letter']})"
        cells += [score, score, _percent(0.0)]
    return cells


def _accuracy_table(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    datasets: Sequence[str],
    constant: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    columns = ["model"] + [f"{d} {rule}" for d in datasets for rule in ("strict", "lenient", "unparsed")]
    rows = []
    for model, per_dataset in results.items():
        cells = [model]
        for d in datasets:
            v = per_dataset.get(d)
            cells += (
                [
                    _accuracy_cell(v["accuracy_strict"], v["accuracy_std"], v.get("accuracy_wilson95")),
                    _accuracy_cell(
                        v["accuracy_lenient"], v["accuracy_lenient_std"], v.get("accuracy_lenient_wilson95")
                    ),
                    _percent(v["unparsed_rate"]),
                ]
                if v
                else ["-"] * 3
            )
        rows.append(cells)
    if constant:
        rows.append(_constant_letter_row(constant, datasets))
    return _table(columns, rows)


def _lenient_source_table(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    """Counts of which rule read each lenient letter, per model and dataset (columns seen anywhere)."""
    entries = [
        (model, d, per_dataset[d]["lenient_sources"])
        for model, per_dataset in report.results.items()
        for d in datasets
        if "lenient_sources" in per_dataset.get(d, {})
    ]
    columns = [
        key for key in (*LENIENT_SOURCES, UNPARSED) if any(counts.get(key) for _, _, counts in entries)
    ]
    rows = [[model, d, *(str(counts.get(key, 0)) for key in columns)] for model, d, counts in entries]
    return _table(["model", "dataset", *columns], rows)


def _format_table(
    results: Mapping[str, Mapping[str, Mapping[str, float]]], datasets: Sequence[str]
) -> list[str]:
    rows = [
        [model]
        + [
            f"{_percent(per_dataset[d]['format_valid_rate'])} / {per_dataset[d]['mean_completion_tokens']:.1f}"
            if d in per_dataset
            else "-"
            for d in datasets
        ]
        for model, per_dataset in results.items()
        if model != RANDOM_LABEL
    ]
    return _table(["model", *datasets], rows)


def _rates(results: Mapping[str, Mapping[str, Mapping[str, Any]]], model: str, dataset: str) -> str:
    """ "format-valid / unparsed" (%) of one model on one dataset, "-" when not summarised."""
    v = results.get(model, {}).get(dataset)
    if not v or "format_valid_rate" not in v:
        return "-"
    return f"{_percent(v['format_valid_rate'])} / {_percent(v['unparsed_rate'])}"


def _shift_means(results: Mapping[str, Mapping[str, Mapping[str, Any]]], entry: Mapping[str, Any]) -> str:
    """Both models' strict accuracy averaged over the option shifts, "A / B" (%), "-" without shifts."""
    means = [
        results.get(m, {}).get(entry["dataset"], {}).get("accuracy_mean_over_shifts")
        for m in (entry["model_a"], entry["model_b"])
    ]
    return "-" if None in means else " / ".join(_percent(m) for m in means)


def _shift_difference(entry: Mapping[str, Any]) -> str:
    """ "+d [low, high]" in points for the mean-over-shifts difference, "-" without it."""
    if "diff_mean_over_shifts" not in entry:
        return "-"
    low, high = entry["ci95_mean_over_shifts"]
    return f"{100 * entry['diff_mean_over_shifts']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _paired_table(
    entries: Sequence[Mapping[str, Any]], results: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> list[str]:
    """One row per pair: both accuracies, n, the difference with its interval and p-value, the
    discordant counts and both models' format-valid / unparsed rates, so a failed run cannot pass for a
    tie; with option shifts, both mean-over-shifts accuracies too."""
    shifts = any(_shift_means(results, e) != "-" for e in entries)
    columns = [
        "dataset",
        "A",
        "B",
        "A (%)",
        "B (%)",
        "n",
        "A - B (points)",
        "95% CI (points)",
        "McNemar p",
        "only A right",
        "only B right",
        "A valid / unparsed (%)",
        "B valid / unparsed (%)",
    ] + (["A / B mean over shifts (%)", "A - B over shifts (points) [95% CI]"] if shifts else [])
    rows = []
    for e in entries:
        low, high = e["ci95"]
        accuracies = [_percent(e[key]) if key in e else "-" for key in ("accuracy_a", "accuracy_b")]
        cells = [
            e["dataset"],
            e["model_a"],
            e["model_b"],
            *accuracies,
            str(e["n"]),
            f"{100 * e['diff']:+.1f}",
            f"[{100 * low:+.1f}, {100 * high:+.1f}]",
            f"{e['mcnemar_p']:.3g}",
            str(e["only_a_correct"]),
            str(e["only_b_correct"]),
            _rates(results, e["model_a"], e["dataset"]),
            _rates(results, e["model_b"], e["dataset"]),
        ] + ([_shift_means(results, e), _shift_difference(e)] if shifts else [])
        rows.append(cells)
    return _table(columns, rows)


def _dedup_table(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    sizes = {d["label"]: d for d in report.datasets}
    columns = ["model"]
    for d in datasets:
        n, n_dedup = sizes[d].get("n", "?"), sizes[d].get("n_dedup", "?")
        columns += [f"{d} all (n={n})", f"{d} dedup (n={n_dedup})"]
    rows = []
    for model, per_dataset in report.results.items():
        cells = [model]
        for d in datasets:
            v = per_dataset.get(d, {})
            cells += (
                [_percent(v["accuracy_strict"]), _percent(v["accuracy_dedup"])]
                if "accuracy_dedup" in v
                else ["-"] * 2
            )
        rows.append(cells)
    return _table(columns, rows)


def _letter_table(report: EvalReport, dataset: Mapping[str, Any]) -> list[str]:
    label = dataset["label"]
    rows = [("gold", dataset.get("gold_letter_distribution", {}))]
    rows += [
        (model, per_dataset[label]["letter_distribution"])
        for model, per_dataset in report.results.items()
        if "letter_distribution" in per_dataset.get(label, {})
    ]
    columns = [*sorted({key for _, counts in rows for key in counts if key != UNPARSED}), UNPARSED]
    cells = [
        [name, *("-" if name == "gold" and key == UNPARSED else str(counts.get(key, 0)) for key in columns)]
        for name, counts in rows
    ]
    return _table([label, *columns], cells)


def _permutation_table(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    entries = [
        (model, d, per_dataset[d])
        for model, per_dataset in report.results.items()
        for d in datasets
        if "accuracy_per_shift" in per_dataset.get(d, {})
    ]
    shifts = max(len(v["accuracy_per_shift"]) for _, _, v in entries)
    columns = ["model", "dataset", *(f"shift {s}" for s in range(shifts)), "mean", "consistent"]
    rows = [
        [model, d, *(_percent(a) for a in v["accuracy_per_shift"])]
        + [_percent(v["accuracy_mean_over_shifts"]), _percent(v["consistency_rate"])]
        for model, d, v in entries
    ]
    return _table(columns, rows)


def _contamination_table(report: EvalReport) -> list[str]:
    rows = []
    for d in report.datasets:
        c = d["contamination"]
        examples = ", ".join(f"{e['id']} -> {e['match_id']} ({e['kind']})" for e in c["examples"][:3])
        rows.append(
            [
                d["label"],
                str(c["n"]),
                str(c["exact"]),
                str(c["near"]),
                _percent(c["fraction"]),
                examples or "-",
            ]
        )
    return _table(["dataset", "n", "exact", "near", "either (%)", "e.g. (test id -> training id)"], rows)


def _checks_markdown(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    """The sections on what the accuracy may owe to other things than knowledge."""
    rules = report.scoring
    entries = [v for per_dataset in report.results.values() for v in per_dataset.values()]
    lines = []
    if any("letter_distribution" in v for v in entries):
        lines += _section(
            "Answer letters (strict rule, options as given)",
            rules["letter_distribution"],
            *(_letter_table(report, dataset) for dataset in report.datasets),
        )
    if any("accuracy_per_shift" in v for v in entries):
        lines += _section(
            "Option order: cyclic shifts (strict rule, %)",
            rules["option_permutations"],
            _permutation_table(report, datasets),
        )
    if any("accuracy_dedup" in v for v in entries):
        lines += _section(
            "Within-set duplicates removed (strict rule, %)",
            rules["accuracy_dedup"],
            _dedup_table(report, datasets),
        )
    if report.train_dataset is not None:
        train = report.train_dataset
        lines += _section(
            f"Overlap with the training set ({train['label']}: {train['source']}@{train['split']}, "
            f"{train.get('n', '?')} questions)",
            rules["contamination"],
            _contamination_table(report),
        )
    return lines


def majority_letter_warnings(report: EvalReport) -> list[str]:
    """One line per model and dataset where one strict letter is more than `MAJORITY_LETTER_SHARE` of
    the answers: such an accuracy is mostly that letter's share of the gold answers."""
    lines = []
    for model, per_dataset in report.results.items():
        for dataset, v in per_dataset.items():
            counts = {k: c for k, c in v.get("letter_distribution", {}).items() if k != UNPARSED}
            total = sum(v.get("letter_distribution", {}).values())
            if not counts or not total:
                continue
            letter = max(counts, key=lambda key: counts[key])
            if counts[letter] > MAJORITY_LETTER_SHARE * total:
                floor = report.constant_letter.get(dataset, {})
                lines.append(
                    f"{model} on {dataset}: answers {letter} to {counts[letter]} of {total} questions "
                    f"({_percent(counts[letter] / total)}%); its accuracy may be a letter prior"
                    + (
                        f" (always {floor['letter']} scores {_percent(floor['accuracy'])}%)"
                        if "letter" in floor
                        else ""
                    )
                )
    return lines


def unparsed_warnings(report: EvalReport) -> list[str]:
    """One line per model and dataset where most answers had no letter: a failed run (empty or cut-off
    completions) whose accuracies and differences are near 0 and look precise, not a real score."""
    return [
        f"{model} on {dataset}: no letter in {_percent(v['unparsed_rate'])}% of its answers (more than "
        f"{UNPARSED_WARNING_RATE:.0%}); its accuracy and every comparison with it say little"
        for model, per_dataset in report.results.items()
        for dataset, v in per_dataset.items()
        if v.get("unparsed_rate", 0.0) > UNPARSED_WARNING_RATE
    ]


def report_warnings(report: EvalReport) -> list[str]:
    """What a reader must see before the numbers (results.md's Warnings; the recipe logs them too)."""
    return unparsed_warnings(report) + majority_letter_warnings(report)


def results_markdown(report: EvalReport) -> str:
    """`results.md`: accuracy under both rules with the unparsed rate, format-valid rate and length,
    the headline (RLVR minus SFT) and every paired comparison, each table saying which rule it uses;
    then the answer letters, the option-order, duplicate and training-overlap checks present."""
    datasets = [d["label"] for d in report.datasets]
    rules = report.scoring
    warnings = report_warnings(report)
    lines = _section("Warnings", None, [f"- {w}" for w in warnings]) if warnings else []
    legend = [
        f"- strict (`accuracy` in results.json, the chart, the paired tests): {rules['strict']}.",
        f"- lenient: {rules['lenient']}.",
        f"- unparsed: {rules['unparsed_rate']}.",
        f"- +-: {rules['accuracy_std']}.",
        f"- [low, high]: {rules['wilson']}.",
        f"- {CONSTANT_LETTER_LABEL}: {rules['constant_letter']}.",
    ]
    lines += _section(
        "Accuracy (%)", None, _accuracy_table(report.results, datasets, report.constant_letter), legend
    )
    lines += _section(
        "Format-valid rate (%, strict rule) / mean completion length (tokens)",
        None,
        _format_table(report.results, datasets),
    )
    if any("lenient_sources" in v for per_dataset in report.results.values() for v in per_dataset.values()):
        lines += _section(
            "Which rule read each lenient letter (questions)",
            rules["lenient_sources"],
            _lenient_source_table(report, datasets),
        )
    headline = headline_entries(report.paired, report.headline)
    if headline:
        rl, sft = report.headline
        lines += _section(
            f"Headline: RLVR minus SFT ({rl} - {sft}, strict rule)",
            None,
            _paired_table(headline, report.results),
        )
    if report.paired:
        lines += _section(
            "Paired comparisons (strict rule)", rules["paired"], _paired_table(report.paired, report.results)
        )
        lines += ["", f"{rules['interval_vs_p']}."]
        disagree = [e for e in report.paired if interval_and_p_disagree(e)]
        if disagree:
            lines.append(
                "Interval and p-value disagree on: "
                + "; ".join(f"{e['dataset']} {e['model_a']} - {e['model_b']}" for e in disagree)
                + "."
            )
    lines += _checks_markdown(report, datasets)
    return "\n".join(lines[1:]) + "\n"  # every section opens with a blank line; the file does not


@dataclass
class EvalReport:
    """Everything `results.json` holds.

    `results[model][dataset]` is `summarise_dataset`'s (or `random_summary`'s) dict; `datasets`
    holds `describe_dataset`'s entries; `paired` the `paired_comparisons` entries; `headline` the
    (RL, SFT) labels of the headline difference, or None without both; `scoring` says in words
    what each number means; `train_dataset` the training set checked for overlap (with its `n`),
    or None when none was given.
    """

    models: list[dict[str, str]]
    datasets: list[dict[str, Any]]
    generation: dict[str, Any]
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    paired: list[dict[str, Any]] = field(default_factory=list)
    headline: tuple[str, str] | None = None
    scoring: dict[str, str] = field(default_factory=lambda: scoring_rules(stop_at_answer_close=False))
    train_dataset: dict[str, Any] | None = None
    constant_letter: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per dataset, `constant_letter_baseline`: the best single letter and its accuracy."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"
