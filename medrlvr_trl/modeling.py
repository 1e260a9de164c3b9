"""Load the tokenizer, policy and value model the same way in every recipe.

The same calls take a Hub id (real runs), a local folder (tests, the offline demo built by
`python -m medrlvr_trl.tiny`) or a `.gguf` file (converted once to a folder, `gguf_models`). Three
things matter beyond plain `from_pretrained`:

- PPO measures a response's length as "first pad token - 1", so pad must differ from eos. Qwen2.5
  base ships pad == eos; `load_tokenizer` then picks a spare special token as pad (never touching eos).
- A missing model should fail with one short message saying what to pass instead, not a traceback
  from deep inside the Hub client.
- Trainable weights are loaded in fp32 unless DeepSpeed keeps its own fp32 master copies
  (`trainable_dtype`): an AdamW step of 1e-6 on a bf16 weight of 0.02 rounds to nothing.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrlvr_trl.gguf_models import hf_folder_for, is_gguf_file
from medrlvr_trl.user_errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import ModelConfig

logger = logging.getLogger(__name__)

# Tried in order when the tokenizer has no pad token or pad == eos. These are pad-like special
# tokens that families ship unused: ours, Qwen2/2.5/3, Llama 3, then generic spellings.
PAD_CANDIDATES = ("<|pad|>", "<|fim_pad|>", "<|vision_pad|>", "<|finetune_right_pad_id|>", "<pad>", "[PAD]")
# Added to the vocabulary when no candidate exists (the model's embeddings are then resized).
FALLBACK_PAD = "<|pad|>"

# "name" or "owner/name" as the Hub accepts them; anything else can only be a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ModelSourceError(UserError):
    """The model or tokenizer named by the user cannot be found locally or on the Hub."""


class MissingModelPathError(ModelSourceError):
    """A local model folder or `.gguf` file that does not exist."""


def load_tokenizer(
    name_or_path: str, *, revision: str | None = None, may_add_pad: bool = True
) -> PreTrainedTokenizerBase:
    """Load a tokenizer set up for batched generation: left padding and pad != eos.

    `may_add_pad=False` is for recipes whose trainer loads the model itself and cannot grow its
    embeddings (TRL's GRPO and RLOO): without a spare pad token in the vocabulary, pad then stays eos.
    """
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name_or_path, revision=revision)
    tokenizer.padding_side = "left"
    ensure_distinct_pad(tokenizer, may_add=may_add_pad)
    return tokenizer


def ensure_distinct_pad(tokenizer: PreTrainedTokenizerBase, *, may_add: bool = True) -> str:
    """Give `tokenizer` a pad token that is not its eos, bos or unk token; return the pad token.

    Prefers a spare pad-like token already in the vocabulary (no embedding resize needed); only when
    none exists is `FALLBACK_PAD` added, or, with `may_add=False`, pad is left as (or set to) eos:
    TRL's GRPO and RLOO end a completion at its first eos, so they need no distinct pad.
    eos is never changed.
    """
    reserved = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id} - {None}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in reserved:
        return tokenizer.pad_token
    previous = tokenizer.pad_token
    vocab = tokenizer.get_vocab()
    choice = next((tok for tok in PAD_CANDIDATES if tok in vocab and vocab[tok] not in reserved), None)
    if choice is not None:
        tokenizer.add_special_tokens({"pad_token": choice})
        logger.info("pad token was %r; using the existing token %r (id %d)", previous, choice, vocab[choice])
        return choice
    if not may_add:
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        logger.info(
            "no spare pad token exists; pad stays %r (the vocabulary is not grown)", tokenizer.pad_token
        )
        return tokenizer.pad_token
    tokenizer.add_special_tokens({"pad_token": FALLBACK_PAD})
    logger.info(
        "pad token was %r and no spare pad token exists; added %r (id %d), model embeddings will grow",
        previous,
        FALLBACK_PAD,
        tokenizer.pad_token_id,
    )
    return FALLBACK_PAD


def load_policy(
    name_or_path: str,
    model_config: ModelConfig | None,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dtype: str | torch.dtype | None = None,
) -> PreTrainedModel:
    """Load the causal LM to train; `dtype` overrides `model_config.dtype` when given."""
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, name_or_path, **_load_kwargs(model_config, dtype))
    _fit_to_tokenizer(model, tokenizer)
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_value_model(
    name_or_path: str,
    model_config: ModelConfig | None,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dtype: str | torch.dtype | None = None,
    head_std: float | None = None,
) -> PreTrainedModel:
    """Load a one-output sequence-classification model (the critic) from a causal LM or critic folder.

    The score head is new when loading a causal LM checkpoint; it then starts at normal(0, `head_std`)
    (0 gives a zero head),
    by default 1 / (hidden_size + 1) as OpenRLHF initialises its value head (`init_value_head`), not
    transformers' 0.02, so the first values are near zero and do not swamp the verifier's +-1.
    `pad_token_id` is set on its config because the model finds each row's last real token by
    looking for pad.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kwargs = _load_kwargs(model_config, dtype)
    config = _from_pretrained(AutoConfig, name_or_path, revision=kwargs.get("revision"))
    # A freshly loaded config of our own: transformers 5 rejects num_labels= as a loading kwarg.
    config.num_labels = 1
    if tokenizer.pad_token_id < config.get_text_config().vocab_size:
        config.pad_token_id = tokenizer.pad_token_id
    # else: an added pad token beyond the embeddings; set once they have grown (an embedding's
    # padding_idx must lie inside it)
    model, info = _from_pretrained(
        AutoModelForSequenceClassification, name_or_path, config=config, output_loading_info=True, **kwargs
    )
    _fit_to_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    head = model.score
    if any(key.startswith("score.") for key in info["missing_keys"]):
        std = head_std if head_std is not None else 1.0 / (config.get_text_config().hidden_size + 1)
        params = [p for p in (head.weight, head.bias) if p is not None]
        # Under ZeRO-3 the head is already partitioned (an empty local tensor): edit the gathered copy.
        with gathered(params), torch.no_grad():
            head.weight.normal_(0.0, std)
            if head.bias is not None:
                head.bias.zero_()
        logger.info("critic: new score head initialised with std %.3g", std)
    return model


def trainable_dtype(requested: str | torch.dtype | None, training_args: Any) -> torch.dtype | str:
    """The dtype to load a model that will be trained in: fp32 unless the backend keeps fp32 masters.

    DeepSpeed with bf16/fp16 keeps fp32 master partitions of its own, so the model may arrive in the
    compute dtype (half the memory at load). DDP, one device and CPU step the tensors they are given,
    so there `requested` is only the compute dtype (autocast, `bf16: true`) and weights stay fp32.
    """
    import torch

    if uses_deepspeed(training_args) and (training_args.bf16 or training_args.fp16):
        return _as_torch_dtype(requested)
    resolved = _as_torch_dtype(requested)  # unknown names still fail here
    if resolved not in (torch.float32, "auto"):
        logger.info(
            "trainable weights load in float32 (fp32 master weights); %s is the compute dtype", resolved
        )
    return torch.float32


def uses_deepspeed(training_args: Any) -> bool:
    """True under `accelerate launch` with a DeepSpeed config, or with TrainingArguments' `deepspeed`."""
    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return launched or bool(getattr(training_args, "deepspeed", None))


def precision_record(training_args: Any, model: PreTrainedModel) -> dict[str, str]:
    """What `run_info.json` says about precision: master weights, compute and saved final model dtypes."""
    compute = "bfloat16" if training_args.bf16 else "float16" if training_args.fp16 else "float32"
    weights = str(next(model.parameters()).dtype).removeprefix("torch.")
    master = weights
    if uses_deepspeed(training_args) and compute != "float32":
        master = "float32 (DeepSpeed optimizer partitions)"
    saved = getattr(training_args, "final_model_dtype", None) or weights
    return {"master_weights_dtype": master, "compute_dtype": compute, "saved_dtype": saved}


def cast_saved_weights(folder: str | Path, dtype: str | None) -> None:
    """Rewrite a saved model's floating-point weights in `dtype` (`final_model_dtype`); None: leave them.

    Works on the files, after any backend has gathered and saved them, so DDP, ZeRO-2/3 and LoRA
    merges all end the same way. Each file is replaced atomically.
    """
    if dtype is None:
        return
    import json

    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    folder = Path(folder)
    for path in sorted(folder.glob("*.safetensors")):
        tensors = {k: v.to(target) if v.is_floating_point() else v for k, v in load_file(path).items()}
        staging = path.with_name(path.name + ".tmp")
        save_file(tensors, staging, metadata={"format": "pt"})
        os.replace(staging, path)
    config_path = folder / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["dtype"] = dtype
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    logger.info("final model weights written in %s", dtype)


def _load_kwargs(model_config: ModelConfig | None, dtype: str | torch.dtype | None) -> dict[str, Any]:
    """Translate a TRL ModelConfig (dtype, attention implementation, revision) into loading kwargs."""
    if model_config is not None and (model_config.load_in_4bit or model_config.load_in_8bit):
        raise ValueError(
            "ModelConfig: load_in_4bit / load_in_8bit are not supported by medrlvr_trl.modeling; "
            "set both to false."
        )
    chosen = dtype if dtype is not None else getattr(model_config, "dtype", None)
    kwargs: dict[str, Any] = {"dtype": _as_torch_dtype(chosen)}
    if model_config is not None:
        kwargs["revision"] = model_config.model_revision
        if model_config.attn_implementation is not None:
            kwargs["attn_implementation"] = model_config.attn_implementation
    return kwargs


def _as_torch_dtype(dtype: str | torch.dtype | None) -> str | torch.dtype:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(
            f"ModelConfig.dtype: {dtype!r} is not a torch dtype; "
            "use 'auto', 'float32', 'bfloat16' or 'float16'."
        )
    return resolved


def _fit_to_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embeddings only when the tokenizer has ids beyond them (e.g. an added pad token).

    Checkpoints such as Qwen2.5 keep spare rows beyond the tokenizer; shrinking them would change
    the model for no reason, so a larger embedding is left as it is. Rows are counted with
    `num_embeddings`: under ZeRO-3 a partitioned weight's shape is empty.
    """
    import torch

    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) <= rows:
        return
    logger.info("resizing token embeddings from %d to %d rows to fit the tokenizer", rows, len(tokenizer))
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    # New rows (an added pad token) start at the mean of the trained ones: a neutral input, and an
    # output row no likelier than an average token (sampling suppresses pad anyway).
    tables = {
        id(t.weight): t.weight
        for t in (model.get_input_embeddings(), model.get_output_embeddings())
        if t is not None
    }
    with gathered(list(tables.values())), torch.no_grad():
        for weight in tables.values():
            weight[rows:] = weight[:rows].mean(dim=0)


def gathered(params: list[Any]) -> Any:
    """Full copies of ZeRO-3-partitioned parameters while editing them (written back on exit)."""
    from contextlib import nullcontext

    if not any(hasattr(p, "ds_id") for p in params):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def local_model_path(name_or_path: str) -> str:
    """What `from_pretrained` should be given: a `.gguf` file becomes its converted folder (`gguf_models`)."""
    if not is_gguf_file(name_or_path):
        return name_or_path
    if not Path(name_or_path).expanduser().is_file():
        raise MissingModelPathError(f"GGUF file {name_or_path!r} does not exist; pass an existing .gguf file")
    return str(hf_folder_for(name_or_path))


def _from_pretrained(loader: Any, name_or_path: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained` with one clear error for a missing local path or unreachable Hub id."""
    local = Path(local_model_path(name_or_path)).expanduser()
    if local.exists():
        return loader.from_pretrained(str(local), **kwargs)
    if not _HUB_ID.match(name_or_path):
        raise MissingModelPathError(
            f"Model path {name_or_path!r} does not exist. Pass an existing local folder, .gguf file or Hub id; "
            "to build the offline tiny model run `make tiny` (python -m medrlvr_trl.tiny --out build/tiny) "
            "and pass build/tiny/policy."
        )
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise ModelSourceError(_hub_failure_message(name_or_path, err)) from None


def _hub_failure_message(hub_id: str, err: OSError) -> str:
    from huggingface_hub import is_offline_mode

    if is_offline_mode():
        reason = "offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local Hub cache"
    else:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"Could not load {hub_id!r} from the Hugging Face Hub: {reason}. No local folder of that name "
        "exists either. Pass a local path to a saved model, or build the offline tiny model with "
        "`python -m medrlvr_trl.tiny --out build/tiny` and pass build/tiny/policy."
    )
