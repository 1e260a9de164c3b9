"""The options of `recipes/eval_mcqa.py` (`MCQAEvalArguments`) and the paper's default datasets."""

from __future__ import annotations

from dataclasses import dataclass, field

from medrlvr_trl.generation import GenerationSettings
from medrlvr_trl.rewards import ANSWER_CLOSE

DEFAULT_DATASETS = (
    # The paper's set, as every config: 1,273 questions, 5 options.
    "medqa=bigbio/med_qa:med_qa_en_source@test",
    "mmlu_pro_health=TIGER-Lab/MMLU-Pro@test@category=health",
)


@dataclass
class MCQAEvalArguments:
    """Options of `recipes/eval_mcqa.py` (YAML via --config, every field overridable on the CLI)."""

    models: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Models as LABEL=PATH_OR_HUB_ID[:cot|:direct|:loglikelihood[:TEMPLATE]], space- or "
            "comma-separated. Without a mode, the model folder's run_info.json decides, else cot. "
            "loglikelihood (default template lm_eval) reads the most likely option letter, no generation."
        },
    )
    datasets: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASETS),
        metadata={
            "help": "Datasets as LABEL=SOURCE[@SPLIT][@category=NAME][@revision=COMMIT]; SOURCE is any "
            "load_mcqa source; a Hub source may be pinned to a commit."
        },
    )
    output_dir: str = field(
        default="runs/eval", metadata={"help": "Folder for results, predictions, figure."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds results.json."}
    )
    skip_missing_models: bool = field(
        default=False,
        metadata={"help": "Warn about and skip models whose folder does not exist instead of failing."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N questions."})
    skip_invalid_rows: bool = field(
        default=False,
        metadata={
            "help": "Leave out dataset rows the loader cannot use (their count and first few go to the log "
            "and to results.json's datasets entries) instead of stopping at the first."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call, per process."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget in cot mode."})
    direct_max_new_tokens: int = field(
        default=32, metadata={"help": "Generation budget in direct mode (only the first line is read)."}
    )
    stop_at_answer_close: bool = field(
        default=False,
        metadata={
            "help": "In cot mode, stop generating after '</answer>': faster, but the strict rule then "
            "cannot see text after the tags, which training penalises."
        },
    )
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (with do_sample)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (each process adds its rank)."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, bfloat16, float16 or float32."})
    backend: str = field(default="hf", metadata={"help": "'hf' (transformers generate) or 'vllm'."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on CPU even when a GPU is present."})
    n_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples for the error bars."})
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the bootstrap draw."})
    option_permutations: int = field(
        default=1,
        metadata={
            "help": "Evaluate every question under K cyclic shifts of its options (shift s moves option i "
            "to (i + s) mod n; 1: as given): accuracy per shift and the consistency rate. K times the "
            "generation."
        },
    )
    train_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training set as LABEL=SOURCE[@SPLIT][@category=NAME] (split defaults to train): "
            "report how many test questions occur in it, exactly or as near-duplicates. Unset: no report."
        },
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Check models, tokenizers and data, log the plan, load no model."}
    )

    def __post_init__(self) -> None:
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend: got {self.backend!r}; use 'hf' or 'vllm'")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.direct_max_new_tokens < 1:
            raise ValueError("batch_size, max_new_tokens and direct_max_new_tokens must be at least 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples: got {self.max_samples}; need a positive number or none")
        if self.option_permutations < 1:
            raise ValueError(f"option_permutations: got {self.option_permutations}; need at least 1")

    def generation_settings(self, answer_mode: str, *, rank: int = 0) -> GenerationSettings:
        """Decoding settings for one answer mode; the seed differs per process so shards differ."""
        cot = answer_mode == "cot"
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens if cot else self.direct_max_new_tokens,
            batch_size=self.batch_size,
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed + rank,
            stop_strings=(ANSWER_CLOSE,) if cot and self.stop_at_answer_close else (),
        )
