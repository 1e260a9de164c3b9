"""Everything that turns a completion into a reward.

- `verifier`: the rule-based verifier (format, answer letter, `verify`, `Gold`); pure Python.
- `terms`: the opt-in reward terms and their weighted mix (`RewardMix`).
- `reward_model`: PPO's reward module, with the gold answer looked up by prompt tokens.
- `reward_funcs`: the same terms as GRPO / RLOO reward functions.

The verifier's names are re-exported here (`from medrlvr_trl.rewards import verify`); importing
them loads neither torch nor the trainers.
"""

from medrlvr_trl.rewards.verifier import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    FormatRules,
    Gold,
    RewardValues,
    TaggedCompletion,
    Verdict,
    check_format,
    extract_letter,
    verify,
)

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "THINK_CLOSE",
    "THINK_OPEN",
    "FormatRules",
    "Gold",
    "RewardValues",
    "TaggedCompletion",
    "Verdict",
    "check_format",
    "extract_letter",
    "verify",
]
