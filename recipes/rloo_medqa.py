"""Med-RLVR with RLOO instead of PPO: TRL's `RLOOTrainer`, the same verifier, data and prompt.

    accelerate launch recipes/rloo_medqa.py --config recipes/configs/rloo_qwen2.5-3b.yaml
    python recipes/rloo_medqa.py --config recipes/configs/tiny/rloo.yaml        # offline, CPU

RLOO samples `num_generations` completions per prompt; each completion's baseline is the mean reward
of the others in its group (leave one out), so it needs no critic. Like the PPO recipe, and unlike
GRPO, the KL penalty to the base model is subtracted from the reward. The training path, shared with
`recipes/grpo_medqa.py`, is `medrlvr_trl.critic_free.run_recipe`. The same command continues an
interrupted run from its newest checkpoint; `--dry_run true` prints the configuration and the
generation plan without loading data or models.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trl import RLOOTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.critic_free import MedRLVRRLOOConfig, run_recipe  # noqa: E402
from medrlvr_trl.user_errors import run_command  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    run_recipe("rloo", MedRLVRRLOOConfig, RLOOTrainer, argv)


if __name__ == "__main__":
    run_command(main)
