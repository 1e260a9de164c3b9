"""Multiple-choice evaluation: which models, on which data, prompted and scored how.

Three answer modes: as in Med-RLVR's Figure 3, `cot` (the R1 template; the model reasons in <think>
tags and answers in <answer> tags) and `direct` (the model answers straight away); and
`loglikelihood`, the most likely option letter after the prompt, as lm-evaluation-harness scores
multiple-choice tasks.

Every completion is scored under two rules (docs/evaluation.md):
- strict, what RL optimises: in cot mode the training verifier (`rewards.verify`, format mode
  "paper" or the run's own) on the whole completion, generated to EOS, so text after `</answer>`
  makes it wrong; in direct mode `direct_letter` (the `<answer>` section if there is one, else the
  first line, read with the verifier's letter rules).
- lenient, how benchmark harnesses read answers: anything may follow the first `</answer>`; the
  letter the strict reader finds in the text up to there, else MMLU-Pro's "answer is (X)" / "Answer:
  X" patterns (`fallback_letter`) limited to the question's letters, only where the text answers
  (`lenient_letter`): no last-standalone-letter rule, so an echoed question stem reads nothing.
A completion with no letter under a rule is wrong under it ("unparsed" means: none under the
lenient rule); it is never replaced by a random guess. Every question is scored; nothing is
dropped. `accuracy`, the chart and the paired comparisons use the strict rule.

Beside accuracy, three checks of what a number means: the letters each model answers next to the
gold letters and the best constant letter (a letter prior looks like knowledge), accuracy under
cyclic shifts of the options with the share of questions answered with the same option text every
time (`option_permutations`), and how many test questions occur in the training set or twice in
their own set (`train_dataset`, `accuracy_dedup`).

One module per job; every name below is importable from `medrlvr_trl.evaluation` itself:
- `specs`: what to evaluate, `--models` / `--datasets` parsed and each model resolved;
- `answers`: the strict and lenient rules that read a letter out of a completion;
- `permutations`: cyclic option shifts and consistency across them;
- `predictions`: prompts, one call to the model, the per-question records and their files;
- `summaries`: accuracy, letter counts, baselines (random, constant letter), dataset descriptions;
- `comparisons`: paired tests between models and the headline pair;
- `report`: `EvalReport` (results.json), results.md, the scoring rules in words, the warnings;
- `arguments`: `MCQAEvalArguments`, the recipe's options.
Generation (`generate_hf`, `generate_vllm`, `generate_sharded`) lives in `medrlvr_trl.generation`,
the module PPO's rollouts sample through too; the recipe `recipes/eval_mcqa.py` only wires these
pieces together and writes the files.
"""

from medrlvr_trl.evaluation.answers import (
    ACCURACY_RULE,
    LENIENT_SOURCES,
    UNPARSED,
    direct_letter,
    fallback_letter,
    lenient_letter,
    score_completion,
    strict_letter,
)
from medrlvr_trl.evaluation.arguments import DEFAULT_DATASETS, MCQAEvalArguments
from medrlvr_trl.evaluation.comparisons import (
    ROLE_RANK,
    headline_entries,
    headline_pair,
    interval_and_p_disagree,
    paired_comparisons,
)
from medrlvr_trl.evaluation.permutations import (
    chosen_option,
    consistency_rate,
    permutation_summary,
    permuted_rows,
    shift_mean_outcomes,
    shift_options,
    shift_row,
)
from medrlvr_trl.evaluation.predictions import (
    generate_loglikelihood,
    predict_permutations,
    prediction_path,
    prediction_records,
    write_predictions,
)
from medrlvr_trl.evaluation.report import (
    CONSTANT_LETTER_LABEL,
    MAJORITY_LETTER_SHARE,
    UNPARSED_WARNING_RATE,
    EvalReport,
    chart_title,
    majority_letter_warnings,
    report_warnings,
    results_markdown,
    scoring_rules,
    unparsed_warnings,
)
from medrlvr_trl.evaluation.specs import (
    ANSWER_MODES,
    DEFAULT_TEMPLATE,
    LOGLIKELIHOOD,
    RANDOM_LABEL,
    RL_WORDS,
    TINY_CONFIGS,
    TOKENIZER_FILES,
    DatasetSpec,
    MissingModelError,
    ModelSpec,
    check_model_source,
    model_role,
    parse_dataset_specs,
    parse_model_specs,
    parse_train_dataset,
    resolve_model,
    run_verifier_mode,
)
from medrlvr_trl.evaluation.summaries import (
    MCQA_ACCURACY_PATH,
    accuracy_summary,
    constant_letter_baseline,
    dedup_summary,
    describe_dataset,
    gold_letter_distribution,
    lenient_source_counts,
    letter_distribution,
    load_accuracy_metric,
    questions_sha256,
    random_guess,
    random_summary,
    summarise_dataset,
)

__all__ = [
    "ACCURACY_RULE",
    "ANSWER_MODES",
    "CONSTANT_LETTER_LABEL",
    "DEFAULT_DATASETS",
    "DEFAULT_TEMPLATE",
    "LENIENT_SOURCES",
    "LOGLIKELIHOOD",
    "MAJORITY_LETTER_SHARE",
    "MCQA_ACCURACY_PATH",
    "RANDOM_LABEL",
    "RL_WORDS",
    "ROLE_RANK",
    "TINY_CONFIGS",
    "TOKENIZER_FILES",
    "UNPARSED",
    "UNPARSED_WARNING_RATE",
    "DatasetSpec",
    "EvalReport",
    "MCQAEvalArguments",
    "MissingModelError",
    "ModelSpec",
    "accuracy_summary",
    "chart_title",
    "check_model_source",
    "chosen_option",
    "consistency_rate",
    "constant_letter_baseline",
    "dedup_summary",
    "describe_dataset",
    "direct_letter",
    "fallback_letter",
    "generate_loglikelihood",
    "gold_letter_distribution",
    "headline_entries",
    "headline_pair",
    "interval_and_p_disagree",
    "lenient_letter",
    "lenient_source_counts",
    "letter_distribution",
    "load_accuracy_metric",
    "majority_letter_warnings",
    "model_role",
    "paired_comparisons",
    "parse_dataset_specs",
    "parse_model_specs",
    "parse_train_dataset",
    "permutation_summary",
    "permuted_rows",
    "predict_permutations",
    "prediction_path",
    "prediction_records",
    "questions_sha256",
    "random_guess",
    "random_summary",
    "report_warnings",
    "resolve_model",
    "results_markdown",
    "run_verifier_mode",
    "score_completion",
    "scoring_rules",
    "shift_mean_outcomes",
    "shift_options",
    "shift_row",
    "strict_letter",
    "summarise_dataset",
    "unparsed_warnings",
    "write_predictions",
]
