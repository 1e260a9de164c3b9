"""The training-dynamics report of an RL run: Med-RLVR's Figure 2 and the six stages, from its logs.

`write_report(run)` reads the run folder's `metrics.jsonl` (reward, response length) and
`completions.jsonl` (every logged completion with its stage label) and writes into `<run>/dynamics/`
(or `out_dir`):

- `dynamics.png`: reward, response length and think length over updates, and the share of each
  stage as a stacked area (shares smoothed over `window` logged updates; 0 picks about 20 windows);
- `report.md`: when each stage peaks, the phases of training (the dominant stage over time), leak
  and prefix-exploit rates, and one real completion per stage, taken from its peak;
- `summary.json`: the same numbers for scripts.

Rows written before stage labels were logged are labelled here from their text with the default
thresholds (leaks stated as option text are then missed: the option texts are not in the log).
docs/dynamics.md explains the stages and how they are measured. `recipes/dynamics_report.py` is its
command line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from medrlvr_trl import run_logs
from medrlvr_trl.dynamics import STAGE_TITLES, STAGES, Stage, completion_features
from medrlvr_trl.rewards import Verdict
from medrlvr_trl.run_logs import COMPLETIONS_FILE, METRICS_FILE
from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

# The run's logs, as medrlvr_trl.ppo names them (not imported from there: that pulls in torch and TRL).
FIGURE_FILE, REPORT_FILE, SUMMARY_FILE = "dynamics.png", "report.md", "summary.json"
TARGET_WINDOWS = 20  # an automatic window splits the logged updates into about this many
STAGE_COLORS = {
    Stage.FORMAT_FAILURE: "#9e9e9e",
    Stage.VERBOSE_FORMATTER: "#1f77b4",
    Stage.CONCISE_STRUCTURER: "#2ca02c",
    Stage.DIRECT_ANSWER_HACKER: "#d62728",
    Stage.STEP_BY_STEP_EXPLOIT: "#ff7f0e",
    Stage.REINTEGRATED_REASONING: "#9467bd",
}


class RunFolderError(UserError, FileNotFoundError):
    """`--run` is not a run folder, or lacks a log: the user's mistake (one `error:` line), and still a
    FileNotFoundError for callers that catch that."""


class RunLogError(UserError):
    """A run's log cannot be read (a row without a needed field, bad JSON, no rows): names file and row."""


@dataclass(frozen=True)
class LoggedCompletion:
    update: int
    completion: str
    stage: Stage
    reward: float
    correct: bool
    answer_leak: bool
    prefix_exploit: bool
    think_words: int


@dataclass(frozen=True)
class Peak:
    update: int
    share: float


@dataclass(frozen=True)
class Phase:
    first_update: int
    last_update: int
    stage: Stage
    mean_share: float


@dataclass
class StageTimeline:
    """Stage shares per logged update, raw and smoothed over a centred window."""

    updates: list[int]
    counts: list[int]
    raw: dict[Stage, list[float]]
    smoothed: dict[Stage, list[float]]
    window: int


# ------------------------------------------------------------------ reading


def _require(row: dict[str, Any], name: str, kinds: tuple[type, ...], path: Path, number: int) -> Any:
    """A field of the right type, or an error naming file, row and field (True is not a number here)."""
    value = row.get(name)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise RunLogError(
            f"{path}: row {number}: field {name!r} is {value!r}; every row needs it "
            "(was this file written by recipes/ppo_medqa.py?)"
        )
    return value


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise RunFolderError(
            f"{path} does not exist; --run must be the output_dir of a PPO, GRPO or RLOO run"
        )
    try:
        rows = list(run_logs.read_rows(path))
    except ValueError as err:  # a line that is not JSON, named by file and line
        raise RunLogError(str(err)) from None
    if not rows:
        raise RunLogError(f"{path} has no rows; the run logged nothing yet")
    return rows


def _logged_completion(row: dict[str, Any], path: Path, number: int) -> LoggedCompletion:
    text = _require(row, "completion", (str,), path, number)
    reward = float(_require(row, "reward", (int, float), path, number))
    correct = _require(row, "correct", (bool,), path, number)
    if "stage" not in row:  # written before stage labels were logged: label from the text now
        verdict = Verdict(
            format_ok=_require(row, "format_ok", (bool,), path, number),
            letter=row.get("letter"),
            correct=correct,
            reward=reward,
        )
        features = completion_features(text, verdict)
        stage, leak, prefix, think = (
            features.stage,
            features.answer_leak,
            features.prefix_exploit,
            features.think_words,
        )
    else:
        try:
            stage = Stage(row["stage"])
        except ValueError:
            known = ", ".join(STAGES)
            raise RunLogError(
                f"{path}: row {number}: field 'stage' is {row['stage']!r}; known: {known}"
            ) from None
        leak, prefix = bool(row.get("answer_leak")), bool(row.get("prefix_exploit"))
        think = int(row.get("think_words") or 0)
    return LoggedCompletion(
        update=_require(row, "update", (int,), path, number),
        completion=text,
        stage=stage,
        reward=reward,
        correct=correct,
        answer_leak=leak,
        prefix_exploit=prefix,
        think_words=think,
    )


def load_completions(path: Path) -> list[LoggedCompletion]:
    """Logged completions with their stage; rows without a stage are labelled from their text."""
    rows = _read(path)
    unlabelled = sum("stage" not in row for row in rows)
    if unlabelled:
        logger.warning(
            "%s: %d rows have no stage label; labelling them from their text with the default thresholds "
            "(leaks stated as option text cannot be seen without the option texts)",
            path,
            unlabelled,
        )
    return [_logged_completion(row, path, number) for number, row in enumerate(rows, 1)]


def load_metrics(path: Path) -> list[dict[str, Any]]:
    """Per-update metrics, one row per update (the last row wins if an update was logged twice)."""
    by_update: dict[int, dict[str, Any]] = {}
    for number, row in enumerate(_read(path), 1):
        by_update[_require(row, "update", (int,), path, number)] = row
    return [by_update[update] for update in sorted(by_update)]


# ------------------------------------------------------------------ analysis


def auto_window(num_updates: int) -> int:
    return max(1, round(num_updates / TARGET_WINDOWS))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average; near the ends it averages over the values that exist."""
    half_before, half_after = (window - 1) // 2, window // 2
    out = []
    for index in range(len(values)):
        part = values[max(0, index - half_before) : index + half_after + 1]
        out.append(sum(part) / len(part))
    return out


def stage_timeline(completions: Sequence[LoggedCompletion], window: int = 0) -> StageTimeline:
    updates = sorted({c.update for c in completions})
    counts = {update: {stage: 0 for stage in STAGES} for update in updates}
    for completion in completions:
        counts[completion.update][completion.stage] += 1
    totals = [sum(counts[update].values()) for update in updates]
    raw = {stage: [counts[u][stage] / n for u, n in zip(updates, totals, strict=True)] for stage in STAGES}
    window = window or auto_window(len(updates))
    smoothed = {stage: moving_average(shares, window) for stage, shares in raw.items()}
    return StageTimeline(updates=updates, counts=totals, raw=raw, smoothed=smoothed, window=window)


def stage_peaks(timeline: StageTimeline) -> dict[Stage, Peak | None]:
    """The logged update where each stage's smoothed share is highest (the first such); None if never seen."""
    peaks: dict[Stage, Peak | None] = {}
    for stage in STAGES:
        if not any(timeline.raw[stage]):
            peaks[stage] = None
            continue
        shares = timeline.smoothed[stage]
        best = max(range(len(shares)), key=lambda i: (shares[i], -i))
        peaks[stage] = Peak(update=timeline.updates[best], share=shares[best])
    return peaks


def training_phases(timeline: StageTimeline) -> list[Phase]:
    """Runs of logged updates over which the same stage has the largest smoothed share."""
    dominant = []
    for index, update in enumerate(timeline.updates):
        stage = max(STAGES, key=lambda s: timeline.smoothed[s][index])  # ties go to the earlier stage
        dominant.append((update, stage, timeline.smoothed[stage][index]))
    phases = []
    for stage, run in groupby(dominant, key=lambda item: item[1]):
        members = list(run)
        mean = sum(share for _, _, share in members) / len(members)
        phases.append(Phase(members[0][0], members[-1][0], stage, mean))
    return phases


def pick_examples(
    completions: Sequence[LoggedCompletion], peaks: dict[Stage, Peak | None]
) -> dict[Stage, LoggedCompletion | None]:
    """One real completion per stage: the first logged at the stage's peak update, else the nearest update."""
    examples: dict[Stage, LoggedCompletion | None] = {}
    for stage in STAGES:
        peak = peaks[stage]
        candidates = [c for c in completions if c.stage == stage]
        if peak is None or not candidates:
            examples[stage] = None
            continue
        examples[stage] = min(candidates, key=lambda c: abs(c.update - peak.update))
    return examples


# ------------------------------------------------------------------ writing


def plot_dynamics(metrics: Sequence[dict[str, Any]], timeline: StageTimeline, path: Path) -> Path:
    """Reward, lengths and stacked stage shares over updates, one panel each, sharing the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = [row["update"] for row in metrics]

    def series(key: str) -> list[float] | None:
        values = [row.get(key) for row in metrics]
        return None if any(v is None for v in values) else [float(v) for v in values]

    fig, (ax_reward, ax_length, ax_stage) = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)
    for key, label in (
        ("verifier/reward", "verifier reward"),
        ("objective/scores", "PPO score (all reward terms)"),
        ("verifier/accuracy", "accuracy"),
    ):
        values = series(key)
        if values is not None and not (key == "objective/scores" and values == series("verifier/reward")):
            ax_reward.plot(updates, values, label=label)
    ax_reward.set_ylabel("reward")
    ax_reward.legend(fontsize=8, loc="best")
    ax_reward.set_title("Training dynamics")

    length = series("verifier/response_length")
    if length is not None:
        ax_length.plot(updates, length, color="black", label="response length (tokens)")
    think = series("dynamics/think_words")
    if think is not None:
        ax_length.plot(updates, think, color="tab:purple", linestyle="--", label="think length (words)")
    ax_length.set_ylabel("length")
    ax_length.legend(fontsize=8, loc="best")

    ax_stage.stackplot(
        timeline.updates,
        [timeline.smoothed[stage] for stage in STAGES],
        labels=[f"{i}. {STAGE_TITLES[stage]}" for i, stage in enumerate(STAGES, 1)],
        colors=[STAGE_COLORS[stage] for stage in STAGES],
    )
    ax_stage.set_ylim(0, 1)
    ax_stage.set_ylabel(f"stage share (window {timeline.window})")
    ax_stage.set_xlabel("update")
    ax_stage.legend(fontsize=7, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _fenced(text: str) -> str:
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _rate(completions: Sequence[LoggedCompletion], flag: str) -> float:
    return sum(getattr(c, flag) for c in completions) / len(completions) if completions else 0.0


def render_report(
    run: Path,
    completions: Sequence[LoggedCompletion],
    timeline: StageTimeline,
    peaks: dict[Stage, Peak | None],
    phases: Sequence[Phase],
    examples: dict[Stage, LoggedCompletion | None],
) -> str:
    overall = {stage: sum(c.stage == stage for c in completions) / len(completions) for stage in STAGES}
    first_seen = {
        stage: min((c.update for c in completions if c.stage == stage), default=None) for stage in STAGES
    }
    last_update = timeline.updates[-1]
    last = [c for c in completions if c.update == last_update]
    lines = [
        f"# Training dynamics: {run}",
        "",
        f"{len(completions)} logged completions from {len(timeline.updates)} updates "
        f"({timeline.updates[0]} to {last_update}); stage shares are smoothed over a centred window of "
        f"{timeline.window} logged update(s). Stages and thresholds: docs/dynamics.md.",
        "",
        f"![Reward, response length and stage shares over updates]({FIGURE_FILE})",
        "",
        "## Stages",
        "",
        "| # | stage | share of all completions | peak update | smoothed share at peak | first seen |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for number, stage in enumerate(STAGES, 1):
        peak = peaks[stage]
        lines.append(
            f"| {number} | {STAGE_TITLES[stage]} | {_percent(overall[stage])} | "
            f"{peak.update if peak else '-'} | {_percent(peak.share) if peak else '-'} | "
            f"{first_seen[stage] if first_seen[stage] is not None else 'not seen'} |"
        )
    lines += ["", "## Phases", "", "The stage with the largest smoothed share, over runs of updates:", ""]
    for phase in phases:
        span = (
            f"update {phase.first_update}"
            if phase.first_update == phase.last_update
            else f"updates {phase.first_update} to {phase.last_update}"
        )
        lines.append(f"- {span}: {STAGE_TITLES[phase.stage]} (mean share {_percent(phase.mean_share)})")
    lines += [
        "",
        "## Hacking",
        "",
        "| measure | all logged updates | last update |",
        "| --- | --- | --- |",
        f"| answer leaked inside `<think>` | {_percent(_rate(completions, 'answer_leak'))} | "
        f"{_percent(_rate(last, 'answer_leak'))} |",
        f"| reasoning before `<think>` (prefix exploit) | {_percent(_rate(completions, 'prefix_exploit'))} | "
        f"{_percent(_rate(last, 'prefix_exploit'))} |",
        "",
        "## One completion per stage",
        "",
    ]
    for number, stage in enumerate(STAGES, 1):
        lines.append(f"### {number}. {STAGE_TITLES[stage]}")
        lines.append("")
        example = examples[stage]
        if example is None:
            lines += ["Not seen in this run.", ""]
            continue
        lines += [
            f"Update {example.update}, reward {example.reward:g}, "
            f"{'correct' if example.correct else 'not correct'}, think {example.think_words} words.",
            "",
            _fenced(example.completion),
            "",
        ]
    return "\n".join(lines)


def write_report(run: str | Path, out_dir: str | Path | None = None, *, window: int = 0) -> dict[str, Path]:
    """Analyse one run folder and write the figure, report and summary; returns their paths."""
    run = Path(run)
    if not run.is_dir():
        raise RunFolderError(
            f"run folder {run} does not exist; --run must be the output_dir of a PPO, GRPO or RLOO run"
        )
    if window < 0:
        raise UserError(f"--window: got {window}; need 0 (automatic) or a positive number of updates")
    out = Path(out_dir) if out_dir else run / "dynamics"
    completions = load_completions(run / COMPLETIONS_FILE)
    metrics = load_metrics(run / METRICS_FILE)
    timeline = stage_timeline(completions, window)
    peaks = stage_peaks(timeline)
    phases = training_phases(timeline)
    examples = pick_examples(completions, peaks)

    out.mkdir(parents=True, exist_ok=True)
    figure = plot_dynamics(metrics, timeline, out / FIGURE_FILE)
    report = out / REPORT_FILE
    report.write_text(
        render_report(run, completions, timeline, peaks, phases, examples) + "\n", encoding="utf-8"
    )
    summary = out / SUMMARY_FILE
    summary.write_text(
        json.dumps(
            {
                "run": str(run),
                "window": timeline.window,
                "updates": timeline.updates,
                "completions_per_update": timeline.counts,
                "stage_shares": {str(s): timeline.raw[s] for s in STAGES},
                "peaks": {str(s): (asdict(p) if p else None) for s, p in peaks.items()},
                "phases": [{**asdict(p), "stage": str(p.stage)} for p in phases],
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    logger.info("wrote %s, %s and %s", figure, report, summary)
    return {"figure": figure, "report": report, "summary": summary}
