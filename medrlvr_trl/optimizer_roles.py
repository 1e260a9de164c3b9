"""The policy's and the critic's parts of the one PPO optimizer: clipped apart, and the policy's Adam
state restarted when critic warmup ends, on every backend.

Clipping, why: OpenRLHF (whose `max_norm` the paper config cites) trains actor and critic as two DeepSpeed
engines, so each is clipped by its own norm. TRL's PPO trains them as one module with one optimizer,
so a plain clip scales both by their joint norm: a critic with large value-loss gradients would shrink
the policy's step (and the reverse). The optimizer's parameter groups carry a `role` ("policy" or
"critic", `MedRLVRPPOTrainer.create_optimizer`); the norms here are taken per role.

- DDP / one device: `clip_by_role` after the gradients are synchronised.
- DeepSpeed ZeRO-1/2/3: the ZeRO optimizer computes one norm per parameter group (ZeRO-3: per sub-group)
  and clips every group by the combined one. `RoleClippedZero` wraps those two calls on the optimizer
  instance so each group is clipped by the norm of its role. `tests/test_trl_contract.py` checks that
  the wrapped DeepSpeed methods still exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

ROLES = ("policy", "critic")


def _combined(norms: Iterable[torch.Tensor | float]) -> torch.Tensor:
    """L2 norm of per-group L2 norms (DeepSpeed marks a non-finite group norm -1: stays non-finite)."""
    values = [torch.as_tensor(n).detach().float().cpu().reshape(()) for n in norms]
    if not values:
        return torch.tensor(0.0)
    stacked = torch.stack(values)
    if (stacked < 0).any() or not torch.isfinite(stacked).all():
        return torch.tensor(float("inf"))
    return stacked.pow(2).sum().sqrt()


def clip_by_role(param_groups: list[dict[str, Any]], max_norm: float) -> dict[str, float]:
    """Clip each role's gradients at `max_norm`; return each role's norm before clipping."""
    norms = {}
    for role in ROLES:
        grads = [p for g in param_groups if g.get("role") == role for p in g["params"] if p.grad is not None]
        if grads:
            norms[role] = float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
    return norms


class RoleClippedZero:
    """A DeepSpeed ZeRO optimizer whose clipping uses one norm per role instead of one overall.

    `last_norms` holds each role's gradient norm (unscaled) at the last optimizer step.
    """

    def __init__(self, zero_optimizer: Any, max_norm: float) -> None:
        self.zero = zero_optimizer
        self.last_norms: dict[str, float] = {}
        self._role_norm: dict[str, torch.Tensor] = {}
        zero_optimizer.clip_grad = max_norm
        group_roles = [g.get("role") for g in zero_optimizer.optimizer.param_groups]
        if set(group_roles) - set(ROLES):
            raise ValueError(f"optimizer groups without a policy/critic role: {group_roles}")
        if hasattr(zero_optimizer, "sub_group_to_group_id"):  # ZeRO-3: norms and clipping per sub-group
            self._roles = [group_roles[zero_optimizer.sub_group_to_group_id[i]]
                           for i in range(len(zero_optimizer.fp16_groups))]  # fmt: skip
            self._wrap_stage3()
        else:  # ZeRO-1/2: per parameter group
            self._roles = group_roles
            self._wrap_stage12()

    def _record(self, group_norms: list[Any]) -> None:
        scale = float(getattr(self.zero, "loss_scale", 1.0) or 1.0)
        self._role_norm = {
            role: _combined(n for n, r in zip(group_norms, self._roles, strict=True) if r == role)
            for role in ROLES
            if role in self._roles  # no critic (reinforce_pp_baseline): no critic norm to report
        }
        self.last_norms = {role: float(norm) / scale for role, norm in self._role_norm.items()}

    def _clip_norm_for(self, index: int, device: torch.device) -> torch.Tensor:
        return self._role_norm[self._roles[index]].to(device)

    def _wrap_stage3(self) -> None:
        zero, norms, clip = self.zero, self.zero._get_norm_groups, self.zero.unscale_and_clip_grads

        def norm_groups() -> list[Any]:
            groups = norms()
            self._record(groups)
            return groups

        def unscale_and_clip_grads(sub_group_id: int, total_norm: Any) -> None:
            device = zero.fp32_partitioned_groups_flat[sub_group_id].device
            clip(sub_group_id, self._clip_norm_for(sub_group_id, device))

        zero._get_norm_groups, zero.unscale_and_clip_grads = norm_groups, unscale_and_clip_grads

    def _wrap_stage12(self) -> None:
        zero = self.zero
        direct, offload = zero.get_grad_norm_direct, zero.complete_grad_norm_calculation_for_cpu_offload
        scaled_global_norm, clip = zero.scaled_global_norm, zero.unscale_and_clip_grads
        recorded: list[Any] = []

        def recording(fn):
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                norm = fn(*args, **kwargs)
                recorded.append(norm)
                return norm

            return wrapped

        def scaled_norm(norm_type: int = 2) -> Any:
            recorded.clear()
            total = scaled_global_norm(norm_type)
            if len(recorded) != len(self._roles):
                raise RuntimeError(
                    f"DeepSpeed computed {len(recorded)} group norms for {len(self._roles)} groups"
                )
            self._record(list(recorded))
            return total

        def unscale_and_clip_grads(grad_groups_flat: list[Any], total_norm: Any) -> None:
            grad = grad_groups_flat[0]
            index = next(
                i for i, fp32 in enumerate(zero.single_partition_of_fp32_groups) if fp32.grad is grad
            )
            clip(grad_groups_flat, self._clip_norm_for(index, grad.device))

        zero.get_grad_norm_direct = recording(direct)
        zero.complete_grad_norm_calculation_for_cpu_offload = recording(offload)
        zero.scaled_global_norm, zero.unscale_and_clip_grads = scaled_norm, unscale_and_clip_grads


def restart_adam_state(optimizer: Any, role: str) -> int:
    """Zero the Adam step counter and moments of `role`'s parameters; return how many tensors were reset.

    Why: during critic warmup the frozen policy gets zero gradients, yet Adam's step counter advances,
    so the first real policy step is taken with the bias corrections of step k: measured 0.5-3.2x the
    learning rate instead of 1x. Under DeepSpeed the state lives on ZeRO's flat fp32 partitions, one
    per parameter group (ZeRO-3: per sub-group).
    """
    zero = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper -> torch or ZeRO optimizer
    base = getattr(zero, "optimizer", zero)  # ZeRO -> the torch optimizer it steps
    groups = base.param_groups
    if hasattr(zero, "sub_group_to_group_id"):  # ZeRO-3
        tensors = [flat for i, flat in enumerate(zero.fp32_partitioned_groups_flat)
                   if groups[zero.sub_group_to_group_id[i]].get("role") == role]  # fmt: skip
    elif hasattr(zero, "single_partition_of_fp32_groups"):  # ZeRO-1/2
        tensors = [flat for flat, g in zip(zero.single_partition_of_fp32_groups, groups, strict=True)
                   if g.get("role") == role]  # fmt: skip
    else:
        tensors = [p for g in groups if g.get("role") == role for p in g["params"]]
    reset = 0
    for tensor in tensors:
        state = base.state.get(tensor)
        if not state:
            continue
        for key, value in state.items():
            if torch.is_tensor(value):
                value.zero_()
            elif key == "step":
                state[key] = 0
        reset += 1
    return reset
