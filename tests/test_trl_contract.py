"""What `medrlvr_trl/ppo.py` relies on in TRL's PPO module. TRL 1.13 removed the PPO trainer, so the
release is pinned; if any of these change, this file fails before a training run silently misbehaves."""

from __future__ import annotations

import inspect

import trl
from trl.experimental.ppo import PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_trl_release_is_the_pinned_one():
    assert trl.__version__ == "1.12.0"


def test_helper_functions_keep_their_signatures():
    assert _params(trl_ppo.batch_generation) == [
        "model", "queries", "local_rollout_forward_batch_size", "pad_token_id", "generation_config"
    ]  # fmt: skip
    assert _params(trl_ppo.forward) == ["model", "query_responses", "pad_token_id"]
    assert _params(trl_ppo.truncate_response) == ["stop_token_id", "pad_token_id", "responses"]
    assert _params(trl_ppo.get_reward) == ["model", "query_responses", "pad_token_id", "context_length"]
    assert _params(trl_ppo.masked_mean)[:2] == ["values", "mask"]
    assert _params(trl_ppo.masked_whiten) == ["values", "mask", "shift_mean"]
    assert trl_ppo.INVALID_LOGPROB == 1.0
    assert callable(trl_ppo.empty_cache)


def test_trainer_constructor_takes_what_we_pass():
    for name in ("args", "processing_class", "model", "ref_model", "reward_model", "train_dataset",
                 "value_model", "eval_dataset", "peft_config", "callbacks"):  # fmt: skip
        assert name in _params(PPOTrainer.__init__), name


def test_constructor_sizes_the_schedule_through_the_method_we_override():
    names = PPOTrainer.__init__.__code__.co_names
    assert "create_optimizer_and_scheduler" in names
    assert "num_mini_batches" in names and "local_batch_size" in names


def test_policy_and_value_wrapper_exposes_policy_and_value_model():
    source = inspect.getsource(trl_ppo.PolicyAndValueWrapper)
    assert "self.policy = policy" in source and "self.value_model = value_model" in source


def test_sample_table_scores_through_the_module_level_get_reward():
    # Our reward seam swaps `trl_ppo.get_reward`; it only works while TRL looks the name up globally.
    assert "get_reward" in PPOTrainer.generate_completions.__code__.co_names


def test_constructor_builds_the_accelerator_and_wrapper_through_names_we_swap():
    # `ppo._trl_construction_seams` replaces both module-level names while TRL's __init__ runs.
    names = PPOTrainer.__init__.__code__.co_names
    assert "Accelerator" in names and "PolicyAndValueWrapper" in names
    assert hasattr(trl_ppo, "Accelerator") and hasattr(trl_ppo, "PolicyAndValueWrapper")
    assert "self.critic_backbone = getattr(value_model, value_model.base_model_prefix)" in inspect.getsource(
        trl_ppo.PolicyAndValueWrapper
    )


def test_deepspeed_zero_methods_wrapped_for_per_model_clipping_exist():
    """`optimizer_roles.RoleClippedZero` wraps these on the ZeRO optimizer instance (deepspeed < 0.20)."""
    import inspect

    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer
    from trl.models.utils import add_hooks, remove_hooks  # ppo._policy_for_generation

    assert callable(add_hooks) and callable(remove_hooks)
    for name in (
        "scaled_global_norm",
        "get_grad_norm_direct",
        "complete_grad_norm_calculation_for_cpu_offload",
    ):
        assert callable(getattr(DeepSpeedZeroOptimizer, name))
    assert list(inspect.signature(inspect.unwrap(DeepSpeedZeroOptimizer.unscale_and_clip_grads)).parameters) == [
        "self", "grad_groups_flat", "total_norm"]  # fmt: skip
    assert callable(DeepSpeedZeroOptimizer_Stage3._get_norm_groups)
    # Stage 3's methods are wrapped by an nvtx decorator without __wrapped__: check how step() calls them.
    step = inspect.getsource(inspect.getmodule(DeepSpeedZeroOptimizer_Stage3))
    assert "self.unscale_and_clip_grads(sub_group_id, scaled_global_grad_norm)" in step
    assert "norm_groups = self._get_norm_groups()" in step
