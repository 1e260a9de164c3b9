"""Per-device memory estimate of a PPO run, printed by `--dry_run` before anything loads.

Why: a PPO step at Qwen's 151,936-token vocabulary is dominated by a few tensors whose sizes follow
from half a dozen config numbers (logits of a rollout chunk, three model copies, Adam states, the
KV cache of a generation chunk). A config that cannot fit should be caught by a dry run on a laptop,
not by a CUDA out-of-memory error after 32 processes have spent minutes loading weights.

Pure arithmetic on the model's shape (a local folder's `config.json`, or the built-in table of the
public Qwen2.5 base configs), the training config and the launch (world size, ZeRO stage, offload,
read from the environment `accelerate launch` sets). It follows what `medrlvr_trl.ppo` holds:

- weights: trainable policy and critic in fp32 (master weights) unless DeepSpeed runs bf16/fp16 (then
  in that dtype, DeepSpeed keeping fp32 masters in its optimizer partitions); the frozen reference in
  the policy's dtype (same weights, same log-probs: KL 0 at step 0); ZeRO-3 partitions all three.
- optimizer: one AdamW over policy + critic, 2 fp32 states per parameter; under DeepSpeed the ZeRO
  paper's 12 bytes per parameter (fp32 master + 2 states) divided by the world size (Rajbhandari et
  al. 2020, arXiv:1910.02054, Fig. 1), 0 on the device when the optimizer is offloaded.
- gradients (update only): fp32 without DeepSpeed, plus DDP's bucket copy of every gradient when more
  than one process runs (`gradient_as_bucket_view=False`, accelerate's default); under ZeRO the
  compute-dtype gradients (partitioned from stage 2) plus the fp32 gradient partition.
- generation (chunks of `local_rollout_forward_batch_size` rows): KV cache over prompt + response,
  no generation scores; ZeRO-3 gathers the whole policy, not the critic (`ds3_gather_for_generation`).
- scoring (same chunks, no grad): policy + critic forward, then the reference; logits only over
  response positions, made fp32 and scaled in place for the log-softmax.
- DeepSpeed's own buffers at their defaults (DeepSpeed's config docs): the gradient reduce bucket
  (`reduce_bucket_size` 5e8 elements, compute dtype) in the update at stages 2 and 3, and under ZeRO-3 up
  to `stage3_max_live_parameters` (1e9) gathered parameters in every phase.
- update (micro-batches of `per_device_train_batch_size` rows of prompt + response): activations of
  policy and critic, response-position logits, gradients; the peak is the largest of the moments
  listed in `_update_moments`.
- `advantage_estimator: reinforce_pp_baseline` has no critic: every critic term above (weights,
  gradients, optimizer states, DDP buckets, its forward in scoring and update) is left out.

The total is the resident memory (weights, optimizer states, DDP buckets, rollout buffers) plus the
largest of the three phases, which never overlap. Not counted: the CUDA context, NCCL buffers and
allocator fragmentation; a plan fits a GPU when its total is at most `HEADROOM` (90%) of what the GPU
holds (`GPU_GIB`: what `torch.cuda.mem_get_info` reports in total, not the marketing size).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

GIB = 2**30
QWEN_VOCAB = 151_936
# Total memory as CUDA reports it (GiB): an A100-40GB holds 39.59, not 40; the 80 GB cards 79.15.
GPU_GIB = {"A100-40GB": 39.59, "A100/H100-80GB": 79.15}
HEADROOM = 0.90  # the share of a GPU a plan may fill: the rest is CUDA context, NCCL and fragmentation
# DeepSpeed defaults (deepspeed.readthedocs.io, ZeRO config) that accelerate's YAML launch configs keep.
DS_REDUCE_BUCKET = 500_000_000  # zero_optimization.reduce_bucket_size, elements
DS3_MAX_LIVE_PARAMETERS = 1_000_000_000  # zero_optimization.stage3_max_live_parameters
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Llama/Qwen2-style decoder (RMSNorm, GQA attention, SwiGLU MLP) memory depends on."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int | None = None
    qkv_bias: bool = True  # Qwen2 has q/k/v biases, Llama has none (a few thousand parameters either way)
    checkpoint_dtype: str | None = None  # what `dtype: auto` loads
    source: str = ""

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def q_width(self) -> int:
        return self.num_heads * self.dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.dim

    @property
    def layer_params(self) -> int:
        h, q, kv = self.hidden_size, self.q_width, self.kv_width
        attention = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        return attention + 3 * h * self.intermediate_size + 2 * h

    @property
    def backbone_params(self) -> int:
        """Embedding, decoder layers and final norm: what policy and critic share in shape."""
        return self.vocab_size * self.hidden_size + self.num_layers * self.layer_params + self.hidden_size

    @property
    def causal_lm_params(self) -> int:
        return self.backbone_params + (0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size)

    @property
    def critic_params(self) -> int:
        """Sequence-classification copy: backbone + a 1-output score head, no LM head."""
        return self.backbone_params + self.hidden_size

    def lora_params(self, rank: int, targets: list[str] | str | None) -> int:
        """Adapter parameters: rank x (in + out) per targeted projection per layer (peft's qwen2/llama
        default targets are q_proj and v_proj)."""
        h, q, kv, i = self.hidden_size, self.q_width, self.kv_width, self.intermediate_size
        sizes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                 "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip
        if targets is None:
            names = ["q_proj", "v_proj"]
        elif targets == "all-linear" or targets == ["all-linear"]:
            names = list(sizes)
        else:
            names = [t for t in ([targets] if isinstance(targets, str) else targets) if t in sizes]
        return self.num_layers * sum(rank * sum(sizes[n]) for n in names)


def _qwen25(
    layers: int, hidden: int, inter: int, heads: int, kv: int, tied: bool, vocab: int, size: str
) -> ModelShape:
    return ModelShape(layers, hidden, inter, heads, kv, vocab, tied, checkpoint_dtype="bfloat16",
                      source=f"built-in table: published config.json of Qwen/Qwen2.5-{size}")  # fmt: skip


# The public Qwen2.5 base configs (Hub `config.json`: num_hidden_layers, hidden_size, intermediate_size,
# num_attention_heads, num_key_value_heads, tie_word_embeddings, vocab_size). The 7B's config.json says
# vocab_size 152,064 (the smaller ones 151,936); its embeddings are not tied.
QWEN25_BASE_SHAPES: dict[str, ModelShape] = {
    "qwen/qwen2.5-0.5b": _qwen25(24, 896, 4864, 14, 2, True, QWEN_VOCAB, "0.5B"),
    "qwen/qwen2.5-1.5b": _qwen25(28, 1536, 8960, 12, 2, True, QWEN_VOCAB, "1.5B"),
    "qwen/qwen2.5-3b": _qwen25(36, 2048, 11008, 16, 2, True, QWEN_VOCAB, "3B"),
    "qwen/qwen2.5-7b": _qwen25(28, 3584, 18944, 28, 4, False, 152_064, "7B"),
}


class NoEstimate(ValueError):
    """Why no estimate can be made (the dry run prints this in one line)."""


def resolve_shape(name_or_path: str) -> ModelShape:
    """The shape from a local folder's (or file's) config.json, else the built-in Qwen2.5 table."""
    local = Path(name_or_path).expanduser()
    if local.exists():
        path = local / "config.json" if local.is_dir() else local
        if not path.is_file():
            raise NoEstimate(f"{local} has no config.json")
        return shape_from_config(json.loads(path.read_text()), source=str(path))
    known = QWEN25_BASE_SHAPES.get(name_or_path.lower().removesuffix("-instruct"))
    if known is None:
        raise NoEstimate(
            f"{name_or_path!r} is not a local folder and not in the built-in table (Qwen2.5 base "
            f"{', '.join(k.split('-')[-1].upper() for k in QWEN25_BASE_SHAPES)}); pass a local folder with its config.json"
        )
    return known


def shape_from_config(config: Mapping[str, Any], *, source: str) -> ModelShape:
    """A `ModelShape` from config.json fields (the text config of a multimodal config, if nested)."""
    config = config.get("text_config") or config
    required = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
    missing = [key for key in required if key not in config]
    if missing:
        raise NoEstimate(
            f"{source} lacks {', '.join(missing)} (a Llama/Qwen2-style decoder config is needed)"
        )
    return ModelShape(
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["intermediate_size"]),
        num_heads=int(config["num_attention_heads"]),
        num_kv_heads=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
        vocab_size=int(config["vocab_size"]),
        # Qwen2Config and LlamaConfig default to untied: the larger (safer) count when the key is absent.
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        head_dim=config.get("head_dim"),
        qkv_bias=config.get("model_type", "qwen2").startswith("qwen2") or bool(config.get("attention_bias")),
        checkpoint_dtype=config.get("torch_dtype") or config.get("dtype"),
        source=source,
    )


@dataclass(frozen=True)
class Launch:
    """Where the processes run: world size, DeepSpeed ZeRO stage, offload."""

    world_size: int = 1
    deepspeed: bool = False
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    reduce_bucket_size: int = DS_REDUCE_BUCKET
    max_live_parameters: int = DS3_MAX_LIVE_PARAMETERS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, deepspeed_config: Any = None) -> Launch:
        """Read what `accelerate launch` exports (accelerate/utils/launch.py): WORLD_SIZE,
        ACCELERATE_USE_DEEPSPEED, ACCELERATE_DEEPSPEED_ZERO_STAGE (accelerate's default 2),
        ACCELERATE_DEEPSPEED_OFFLOAD_{OPTIMIZER,PARAM}_DEVICE, or a DeepSpeed JSON config
        (ACCELERATE_DEEPSPEED_CONFIG_FILE, or TrainingArguments' `deepspeed`)."""
        env = os.environ if env is None else env
        world_size = int(env.get("WORLD_SIZE", "1"))
        ds_file = deepspeed_config or env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
        use_ds = env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" or bool(deepspeed_config)
        if not use_ds:
            return cls(world_size=world_size)
        stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
        off_opt = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower() not in ("none", "")
        off_param = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none").lower() not in ("none", "")
        ds = ds_file if isinstance(ds_file, dict) else _read_json(ds_file)
        zero = ds.get("zero_optimization", {}) if ds else {}
        if isinstance(zero.get("stage"), int):
            stage = zero["stage"]
        off_opt = off_opt or zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
        off_param = off_param or zero.get("offload_param", {}).get("device", "none") not in ("none", None)
        buckets = {
            name: int(zero[key])
            for name, key in (("reduce_bucket_size", "reduce_bucket_size"),
                              ("max_live_parameters", "stage3_max_live_parameters"))
            if isinstance(zero.get(key), (int, float))
        }  # fmt: skip
        return cls(world_size, True, stage, off_opt, off_param and stage == 3, **buckets)

    @classmethod
    def from_accelerate_config(cls, path: str | Path, env: Mapping[str, str] | None = None) -> Launch:
        """The launch an `accelerate launch --config_file <path>` would make, for a dry run without it.

        World size: WORLD_SIZE when set (e.g. 32 for the paper's 4 x 8 GPUs), else the file's num_processes.
        """
        import yaml

        from medrlvr_trl.user_errors import UserError

        file = Path(path)
        try:
            config = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UserError(
                f"--launch_config {path}: cannot read it as an accelerate config ({err})"
            ) from None
        env = os.environ if env is None else env
        world_size = env.get("WORLD_SIZE") or str(config.get("num_processes", 1))
        if config.get("distributed_type") != "DEEPSPEED":
            return cls(world_size=int(world_size))
        ds = config.get("deepspeed_config") or {}
        launched = {
            "WORLD_SIZE": world_size,
            "ACCELERATE_USE_DEEPSPEED": "true",
            "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(ds.get("zero_stage", 2)),
            "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": str(ds.get("offload_optimizer_device", "none")),
            "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": str(ds.get("offload_param_device", "none")),
        }
        if ds.get("deepspeed_config_file"):
            launched["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = str(ds["deepspeed_config_file"])
        return cls.from_env(launched)

    def describe(self) -> str:
        if not self.deepspeed:
            return f"{'DDP' if self.world_size > 1 else 'single process'}, world size {self.world_size}"
        offload = [
            name
            for name, on in (("optimizer", self.offload_optimizer), ("params", self.offload_params))
            if on
        ]
        return (f"DeepSpeed ZeRO-{self.zero_stage}, world size {self.world_size}"
                + (f", offload {'+'.join(offload)} to CPU" if offload else ""))  # fmt: skip


def _read_json(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text()) if path and path != "none" and Path(path).is_file() else {}
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class PPOWorkload:
    """The config numbers PPO memory depends on (`from_args` reads them from the recipe's dataclasses)."""

    prompt_length: int
    response_length: int
    micro_batch: int
    rollout_chunk: int
    rollouts_per_device: int
    compute_bytes: int  # 2 with bf16/fp16 (autocast or DeepSpeed), else 4
    gradient_checkpointing: bool
    gather_for_generation: bool = True  # ds3_gather_for_generation
    lora_rank: int | None = None  # use_peft: adapter rank (no reference model)
    lora_targets: list[str] | str | None = None
    vllm_share: float | None = None  # rollout_backend vllm: the engine's share of the GPU while it samples
    critic: bool = True  # False: advantage_estimator reinforce_pp_baseline, no value model at all

    @classmethod
    def from_args(cls, args: Any, model_args: Any) -> PPOWorkload:
        per_device = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.num_mini_batches
        )
        use_peft = bool(getattr(model_args, "use_peft", False))
        return cls(
            prompt_length=args.max_prompt_length,
            response_length=args.response_length,
            micro_batch=args.per_device_train_batch_size,
            rollout_chunk=min(args.local_rollout_forward_batch_size, per_device),
            rollouts_per_device=per_device,
            compute_bytes=2 if (args.bf16 or args.fp16) else 4,
            gradient_checkpointing=bool(args.gradient_checkpointing),
            gather_for_generation=bool(getattr(args, "ds3_gather_for_generation", True)),
            lora_rank=getattr(model_args, "lora_r", 16) if use_peft else None,
            lora_targets=getattr(model_args, "lora_target_modules", None) if use_peft else None,
            vllm_share=args.vllm_gpu_memory_utilization
            if getattr(args, "rollout_backend", "hf") == "vllm"
            else None,
            critic=getattr(args, "advantage_estimator", "gae") == "gae",
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device, by component and by phase; `line()` is the dry run's summary."""

    weights: float
    weight_copies: float  # transient: autocast's low-precision weight cache, ZeRO-3 gathers
    gradients: float
    optimizer: float
    kv_cache: float
    logits: float
    activations: float
    activations_other: float  # the same with gradient checkpointing switched the other way
    other: float  # rollout buffers, masks, generation and no-grad forward transients
    gradient_checkpointing: bool
    phases: dict[str, float]
    resident: float
    details: dict[str, str] = field(default_factory=dict)
    vllm_share: float | None = None  # the engine's share of the GPU in generation (instead of that phase)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)

    @property
    def total(self) -> float:
        return self.resident + self.phases[self.peak_phase]

    def line(self) -> str:
        gc = "on" if self.gradient_checkpointing else "off"
        other = "off" if self.gradient_checkpointing else "on"
        copies = f", weight copies {_g(self.weight_copies)}" if self.weight_copies else ""
        return (
            f"memory per device (estimate): weights {_g(self.weights)}{copies}, gradients {_g(self.gradients)}, "
            f"optimizer states {_g(self.optimizer)}, generation KV cache {_g(self.kv_cache)}, "
            f"logits {_g(self.logits)}, activations {_g(self.activations)} with gradient checkpointing {gc} "
            f"({_g(self.activations_other)} with it {other}), other {_g(self.other)}; "
            f"peak in {self.peak_phase}: total {self.total / GIB:.1f} GiB"
        )

    def total_on(self, gpu: str) -> float:
        """The total on `gpu`: with vLLM rollouts its engine takes `vllm_share` of the GPU while it samples
        (weights + KV cache) and sleeps, freeing both, through scoring and the update."""
        if self.vllm_share is None:
            return self.total
        engine = self.vllm_share * GPU_GIB[gpu] * GIB
        return self.resident + max(engine, *(v for k, v in self.phases.items() if k != "generation"))

    def fits(self, gpu: str) -> bool:
        """True when the total on `gpu` (a `GPU_GIB` key) is at most `HEADROOM` of what it holds."""
        return self.total_on(gpu) <= HEADROOM * GPU_GIB[gpu] * GIB

    def detail_lines(self) -> list[str]:
        phases = ", ".join(f"{name} {_g(value)}" for name, value in self.phases.items())
        lines = [f"memory plan: {key}: {value}" for key, value in self.details.items()]
        lines.append(f"memory plan: total = resident {_g(self.resident)} + the largest phase ({phases})")
        if self.vllm_share is not None:
            lines.append(f"memory plan: vLLM rollouts: the engine takes {self.vllm_share:.0%} of the GPU while it "
                         "samples (sleeping, nothing, in scoring and update); the generation phase above is not used")  # fmt: skip
        verdicts = [f"{gpu} ({GPU_GIB[gpu]} GiB, line {HEADROOM * GPU_GIB[gpu]:.1f}): "
                    + (f"{self.total_on(gpu) / GIB:.1f} GiB, " if self.vllm_share is not None else "")
                    + ("fits" if self.fits(gpu) else "does NOT fit") for gpu in GPU_GIB]  # fmt: skip
        lines.append(f"memory plan: fit at {HEADROOM:.0%} of the GPU's memory: " + "; ".join(verdicts))
        return lines


def _g(num_bytes: float) -> str:
    return f"{num_bytes / GIB:.2f} GiB"


def layer_activation_bytes(shape: ModelShape, regime: str) -> int:
    """Bytes autograd keeps per token for one decoder layer in a training forward.

    The method of Korthikanti et al. 2022 (arXiv:2205.05198, Sec. 4.1: count every tensor saved for
    backward; for GPT, sbh(34 + 5as/h) in 16-bit), applied to the Qwen2/Llama block that transformers
    runs: no dropout (no masks), SDPA's memory-efficient kernel (no s x s scores, so no 5as/h term;
    keeps q, k, v, output), k/v repeated to all heads before SDPA whenever a padding mask is passed
    (always, with left-padded prompts), SwiGLU MLP (gate, SiLU output, up, product: 4 x intermediate),
    and RMSNorm with its fp32 upcast (fp32 input, normalised, output). `regime`:
      fp32      everything fp32:                        24h + 20q + 16i   (q = heads x head_dim)
      bf16      DeepSpeed bf16 weights, fp32 norm math: 16h + 10q + 8i
      autocast  fp32 weights, bf16 matmuls; residual stream and norms fp32, each projection saves
                its own bf16 cast of the norm output (3 for q/k/v, 2 for gate/up): 26h + 10q + 8i
    """
    h, q, i = shape.hidden_size, shape.q_width, shape.intermediate_size
    return {
        "fp32": 24 * h + 20 * q + 16 * i,
        "bf16": 16 * h + 10 * q + 8 * i,
        "autocast": 26 * h + 10 * q + 8 * i,
    }[regime]


def _model_activations(shape: ModelShape, regime: str, tokens: int, checkpointing: bool) -> float:
    """One model's training-forward activations: decoder layers (all, or with checkpointing each
    layer's input plus one layer recomputed with its gradients), final norm, attention mask."""
    residual = 2 if regime == "bf16" else 4
    layer = layer_activation_bytes(shape, regime) * tokens
    if checkpointing:
        layers = shape.num_layers * residual * shape.hidden_size * tokens + 2 * layer
    else:
        layers = shape.num_layers * layer
    final_norm = (4 + 2 * residual) * shape.hidden_size * tokens
    return layers + final_norm


def estimate_ppo(shape: ModelShape, work: PPOWorkload, launch: Launch) -> MemoryEstimate:
    """Bytes per device of one PPO update (see the module docstring for what is counted)."""
    c, n = work.compute_bytes, launch.world_size
    ds, stage = launch.deepspeed, (launch.zero_stage if launch.deepspeed else 0)
    lora = work.lora_rank is not None
    autocast = not ds and c < 4  # fp32 master weights, bf16/fp16 compute
    regime = "fp32" if c == 4 else ("autocast" if autocast else "bf16")
    trained_bytes = c if ds else 4
    ref_bytes = trained_bytes  # the reference loads in the policy's dtype
    p_policy, p_critic = shape.causal_lm_params, (shape.critic_params if work.critic else 0)
    models = 2 if work.critic else 1  # models in a training forward: policy (+ critic)
    adapter = shape.lora_params(work.lora_rank, work.lora_targets) if lora else 0
    trainable = (adapter if lora else p_policy) + p_critic
    cast_params = p_critic + (0 if lora else p_policy)  # autocast caches casts of leaves that require grad

    # --- resident
    shard = n if stage == 3 else 1
    on_device = 0.0 if launch.offload_params else 1.0
    w_policy = p_policy * trained_bytes / shard * on_device + adapter * 4
    w_critic = p_critic * trained_bytes / shard * on_device
    w_ref = 0.0 if lora else p_policy * ref_bytes / shard * on_device
    weights = w_policy + w_critic + w_ref
    if not ds:
        optimizer = 8.0 * trainable
    else:
        optimizer = 0.0 if launch.offload_optimizer else 12.0 * trainable / n
    ddp_buckets = 4.0 * trainable if (not ds and n > 1) else 0.0
    prompt, resp, chunk, micro = (
        work.prompt_length,
        work.response_length,
        work.rollout_chunk,
        work.micro_batch,
    )
    seq = prompt + resp
    buffers = work.rollouts_per_device * (seq * 8 * 2 + resp * 4 * 10)  # token ids; log-probs, values, GAE
    resident = weights + optimizer + ddp_buckets + buffers

    # --- generation: KV cache, prefill transient, sampling buffers; gathered / cast policy weights
    kv = 2 * shape.num_layers * shape.kv_width * seq * chunk * c
    kv_grow = kv / shape.num_layers  # DynamicCache grows one layer's tensors by concatenation
    prefill = (
        chunk * prompt * (4 * shape.hidden_size * 4 + 3 * shape.intermediate_size * c) + chunk * prompt**2
    )
    sampling = 6 * chunk * shape.vocab_size * 4  # fp32 next-token logits, processors, probabilities
    if stage == 3:
        # DeepSpeed keeps up to stage3_max_live_parameters gathered (one layer + prefetch at the least)
        working = c * max(shape.vocab_size * shape.hidden_size + 2 * shape.layer_params,
                          min(launch.max_live_parameters, max(p_policy, p_critic)))  # fmt: skip
        gathered_gen = c * p_policy if work.gather_for_generation else working
    else:
        working = gathered_gen = 0.0
    gen_copies = gathered_gen + (c * (0 if lora else p_policy) if autocast else 0.0)
    generation = kv + kv_grow + prefill + sampling + gen_copies

    # --- scoring: policy + critic forward, then the reference, `chunk` rows, no grad. Logits: the LM head's
    # output (R+1 positions) -> fp32 (a copy unless already fp32), scaled in place (/ temperature): 6 bytes
    # per element from bf16, 4 in fp32. Under autocast accelerate's convert_outputs_to_fp32 makes the
    # pair's copy, the reference's is ours: 6 bytes either way. Plus TRL's row-by-row log-softmax (two
    # (R, V) fp32 rows).
    elems = chunk * resp * shape.vocab_size
    low = c + 4 if c < 4 else 4
    rows = 2 * resp * shape.vocab_size * 4
    pair_logits = elems * low + rows
    ref_logits = elems * low + rows
    nograd_layer = (
        chunk * seq * (3 * shape.hidden_size * 4 + 3 * shape.intermediate_size * c) + models * chunk * seq**2
    )
    pair_copies = working + (c * cast_params if autocast else 0.0)
    score_logits = max(pair_logits, ref_logits)
    score_copies = pair_copies if pair_logits + pair_copies >= ref_logits + working else working
    scoring = max(pair_logits + pair_copies, ref_logits + working) + nograd_layer

    # --- update: micro-batch rows of prompt + response, with grad
    tokens, u_elems = micro * seq, micro * resp * shape.vocab_size
    acts = {gc: models * _model_activations(shape, regime, tokens, gc) for gc in (True, False)}
    masks = models * micro * seq**2  # one bool (rows, 1, S, S) SDPA mask per model
    if ds:
        g_policy = (c / (n if stage >= 2 else 1) + 4 / n) * (adapter if lora else p_policy)
        g_critic = (c / (n if stage >= 2 else 1) + 4 / n) * p_critic
    else:
        g_policy, g_critic = 4.0 * (adapter if lora else p_policy), 4.0 * p_critic
    update_copies = working + (c * cast_params if autocast else 0.0)
    reduce_bucket = c * launch.reduce_bucket_size if stage >= 2 else 0.0  # gradients wait here to be reduced
    moments = _update_moments(acts[work.gradient_checkpointing], u_elems, g_policy, g_critic, c, work.critic)
    update = max(moments.values()) + masks + update_copies + reduce_bucket

    phases = {"generation": generation, "scoring": scoring, "update": update}
    transient_other = {"generation": prefill + sampling + kv_grow, "scoring": nograd_layer,
                       "update": masks + reduce_bucket}  # fmt: skip
    peak = max(phases, key=phases.__getitem__)
    copies = {"generation": gen_copies, "scoring": score_copies, "update": update_copies}[peak]
    details = {
        "model": f"{shape.source}; {shape.num_layers} layers, hidden {shape.hidden_size}, intermediate "
        f"{shape.intermediate_size}, {shape.num_heads} heads / {shape.num_kv_heads} kv heads, vocab {shape.vocab_size:,}, "
        f"{'tied' if shape.tie_word_embeddings else 'untied'} embeddings; policy {p_policy / 1e9:.3f}B"
        + (f", critic {p_critic / 1e9:.3f}B" if work.critic else "")
        + " parameters"
        + (f", LoRA adapter {adapter / 1e6:.2f}M" if lora else ""),
        "launch": launch.describe()
        + f"; compute {'fp32' if c == 4 else 'bf16/fp16'}"
        + (" autocast over fp32 master weights" if autocast else ""),
        "weights": f"policy {_g(w_policy)}"
        + (f" + critic {_g(w_critic)}" if work.critic else "")
        + f" + reference {_g(w_ref)}"
        + (" (none: LoRA)" if lora else "")
        + ("" if work.critic else "; no critic (advantage_estimator reinforce_pp_baseline)"),
        "DeepSpeed buffers": (
            f"reduce bucket {_g(reduce_bucket)} (update)"
            + (f", live gathered parameters up to {_g(working)} (every phase)" if stage == 3 else "")
            if ds
            else "none (no DeepSpeed)"
        ),
        "update moments": ", ".join(f"{k} {_g(v)}" for k, v in moments.items()),
        "sizes": f"prompt {prompt} + response {resp} tokens (max_prompt_length is the worst case), rollout chunk {chunk} "
        f"rows, micro-batch {micro} rows",
    }
    return MemoryEstimate(
        weights=weights,
        weight_copies=copies,
        gradients=g_policy + g_critic + ddp_buckets,
        optimizer=optimizer,
        kv_cache=kv,
        logits=max(score_logits, _logits_update_peak(u_elems)),
        activations=acts[work.gradient_checkpointing],
        activations_other=acts[not work.gradient_checkpointing],
        other=buffers + transient_other[peak],  # DDP buckets are listed with the gradients
        gradient_checkpointing=work.gradient_checkpointing,
        phases=phases,
        resident=resident,
        details=details,
        vllm_share=work.vllm_share,
    )


def _logits_update_peak(elems: int) -> float:
    """Response-position logits in the update at their largest: the fp32 scaled logits (kept for the
    entropy metric and by the log-softmax for backward) plus two same-size fp32 gradient buffers in
    the first steps of backward; the entropy metric after the step also peaks at three (scaled,
    softmax, product). Measured alone on CPU at (4, 256, 151,936): 3.0x in fp32 and bf16; the forward
    peaks lower (2.25x fp32: output + scaled; 2.5x bf16: output + fp32 copy + scaled)."""
    return 3.0 * elems * 4


def _update_moments(
    acts: float, elems: int, g_policy: float, g_critic: float, c: int, critic: bool = True
) -> dict[str, float]:
    """The candidate peaks of one micro-step (`MedRLVRPPOTrainer._micro_step`); autograd runs the
    critic's backward (created after the policy's forward) before the policy's LM head and layers.

      logits backward  the models' activations + scaled logits + 2 gradient buffers of that size
      critic backward  policy activations + scaled logits + the LM-head gradient waiting (compute dtype)
                       + critic gradients (no such moment without a critic)
      policy backward  scaled logits + critic gradients + policy gradients
      entropy          scaled logits + softmax + product (after the optimizer step)
    """
    full = elems * 4
    moments = {
        "logits backward": acts + _logits_update_peak(elems),
        "critic backward": acts / 2 + full + elems * c + g_critic,
        "policy backward": full + g_critic + g_policy,
        "entropy": 3 * full,
    }
    if not critic:
        del moments["critic backward"]
    return moments


def memory_plan_lines(
    args: Any, model_args: Any, env: Mapping[str, str] | None = None, launch_config: str | None = None
) -> list[str]:
    """What the PPO dry run prints: detail lines, then the one `memory per device (estimate): ...` line,
    or a single line saying why there is no estimate. The launch is `launch_config` (an accelerate
    config file) when given, else the one `accelerate launch` describes in the environment."""
    try:
        shape = resolve_shape(model_args.model_name_or_path or "")
    except NoEstimate as err:
        return [f"memory per device (estimate): not available: {err}"]
    launch = (
        Launch.from_accelerate_config(launch_config, env)
        if launch_config
        else Launch.from_env(env, getattr(args, "deepspeed", None))
    )
    estimate = estimate_ppo(shape, PPOWorkload.from_args(args, model_args), launch)
    lines = estimate.detail_lines()
    if (
        getattr(args, "value_model_name_or_path", None)
        and getattr(args, "advantage_estimator", "gae") == "gae"
    ):
        lines.append("memory plan: the critic is assumed to have the policy's shape")
    return [*lines, estimate.line()]


def log_memory_plan(args: Any, model_args: Any, launch_config: str | None = None) -> None:
    """Log `memory_plan_lines` on the main process (rank 0 of the launch)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for line in memory_plan_lines(args, model_args, launch_config=launch_config):
        logger.info(line)
