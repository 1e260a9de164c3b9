"""Options every RL recipe shares (PPO, GRPO, RLOO): the verifier, the reward terms and their
weights, the training-dynamics thresholds, the run logs and resume.

A dataclass mixin placed before the TRL config among the bases, so each trainer's config is TRL's
own plus these fields, spelled the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medrlvr_trl.configs import FinalModelOptions, OptionOrderOptions
from medrlvr_trl.dynamics import StageThresholds
from medrlvr_trl.rewards import RewardValues
from medrlvr_trl.rewards.terms import (
    DEFAULT_REWARDS,
    REWARD_TERMS,
    RewardMix,
    warn_if_penalties_outweigh_format,
)
from medrlvr_trl.runlog import COMPLETIONS_FILE


@dataclass
class VerifierOptions(FinalModelOptions, OptionOrderOptions):
    """The Med-RLVR reward and logging options; bad values fail when the config is built."""

    verifier_mode: str = field(default="paper", metadata={"help": "'paper' or 'strict' format check."})
    format_error_reward: float = field(default=-1.0, metadata={"help": "Reward for a malformed response."})
    wrong_reward: float = field(default=0.0, metadata={"help": "Reward for a well-formed wrong answer."})
    correct_reward: float = field(default=1.0, metadata={"help": "Reward for the gold letter."})
    rewards: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARDS),
        metadata={
            "help": f"Reward terms summed into the reward (docs/dynamics.md); known: {', '.join(REWARD_TERMS)}."
        },
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per term in `rewards`; empty: all 1.0."}
    )
    max_prompt_length: int = field(
        default=1024, metadata={"help": "Longer prompts are an error, not truncated."}
    )
    log_completions_steps: int = field(
        default=1, metadata={"help": f"Append completions to {COMPLETIONS_FILE} every N updates (0: never)."}
    )
    resume: bool = field(
        default=True,
        metadata={
            "help": "Continue from the newest checkpoint in output_dir; if False, refuse a used output_dir."
        },
    )
    dynamics_short_think_words: int = field(
        default=StageThresholds.short_think_words,
        metadata={"help": "Think shorter than this is shrunk (stages 4-5, think_length penalty)."},
    )
    dynamics_verbose_think_words: int = field(
        default=StageThresholds.verbose_think_words,
        metadata={"help": "Think this long is verbose (stage 2)."},
    )
    dynamics_prefix_words: int = field(
        default=StageThresholds.prefix_reasoning_words,
        metadata={"help": "Text before <think> this long is the step-by-step exploit (stage 5)."},
    )
    dynamics_enumeration_options: int = field(
        default=StageThresholds.enumeration_min_options,
        metadata={"help": "Options a think must address to count as option-by-option."},
    )

    def __post_init__(self) -> None:
        # Unknown terms, a wrong number of weights or bad thresholds fail here, before any model loads.
        mix = self.reward_mix()
        warn_if_penalties_outweigh_format(mix, self.reward_values())
        self.reward_weights = list(mix.weights)
        super().__post_init__()

    def reward_values(self) -> RewardValues:
        return RewardValues(
            format_error=self.format_error_reward, wrong=self.wrong_reward, correct=self.correct_reward
        )

    def stage_thresholds(self) -> StageThresholds:
        return StageThresholds(
            short_think_words=self.dynamics_short_think_words,
            verbose_think_words=self.dynamics_verbose_think_words,
            prefix_reasoning_words=self.dynamics_prefix_words,
            enumeration_min_options=self.dynamics_enumeration_options,
        )

    def reward_mix(self) -> RewardMix:
        return RewardMix(self.rewards, self.reward_weights or None, thresholds=self.stage_thresholds())
