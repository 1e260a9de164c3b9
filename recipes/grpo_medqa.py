"""Med-RLVR with GRPO instead of PPO: TRL's `GRPOTrainer`, the same verifier, data and prompt.

    accelerate launch recipes/grpo_medqa.py --config recipes/configs/grpo_qwen2.5-3b.yaml
    accelerate launch --config_file launch/zero3.yaml recipes/grpo_medqa.py --config ... --beta 0.0
    python recipes/grpo_medqa.py --config recipes/configs/tiny/grpo.yaml        # offline, CPU

GRPO samples `num_generations` completions per prompt and uses each group's mean (and standard
deviation) of the reward as the baseline, so it needs no critic. The training path, shared with
`recipes/rloo_medqa.py`, is `medrlvr_trl.critic_free.run_recipe`. The same command continues an
interrupted run from its newest checkpoint; `--dry_run true` prints the configuration and the
generation plan without loading data or models.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trl import GRPOTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.critic_free import MedRLVRGRPOConfig, run_recipe  # noqa: E402
from medrlvr_trl.user_errors import run_command  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    run_recipe("grpo", MedRLVRGRPOConfig, GRPOTrainer, argv)


if __name__ == "__main__":
    run_command(main)
