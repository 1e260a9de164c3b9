"""A `.gguf` file as a model source: converted once to a Hugging Face folder, then loaded like any other.

transformers reads GGUF (`from_pretrained(folder, gguf_file=name)`, with the `gguf` package) and
de-quantises the weights to fp32, but it refuses to `save_pretrained` such a model, and TRL's GRPO
and RLOO trainers load their policy and reference by path. So every recipe is given a plain folder:
`hf_folder_for(path)` converts the file into a cache folder the first time and returns that folder
afterwards. The conversion copies the de-quantised weights into a fresh model built from the GGUF's
config without its quantisation entry, and saves it with the tokenizer and generation config.

The cache key is the file's resolved path, size and modification time, so an edited or replaced
file converts again. Processes launched together convert once: the first takes a file lock, the
others wait for it and then find the folder. The folder appears by an atomic rename, so an
interrupted conversion leaves nothing that looks finished.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
# Where converted folders live unless MEDRLVR_GGUF_CACHE says otherwise.
DEFAULT_CACHE = Path("~/.cache/medrlvr_trl/gguf")


def is_gguf_file(name_or_path: str | os.PathLike) -> bool:
    """True for a path that ends in `.gguf` (a Hub id never does)."""
    return str(name_or_path).lower().endswith(GGUF_SUFFIX)


def hf_folder_for(gguf_path: str | os.PathLike) -> Path:
    """The Hugging Face folder converted from `gguf_path`; converts it when the cache has none yet."""
    source = Path(gguf_path).expanduser().resolve()
    root = Path(os.environ.get("MEDRLVR_GGUF_CACHE") or DEFAULT_CACHE).expanduser()
    stat = source.stat()
    key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = root / f"{source.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting the same file
        if not (folder / "config.json").is_file():
            convert_gguf(source, folder)
    return folder


def convert_gguf(gguf_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the model and tokenizer in `gguf_path` to the folder `out` (fp32 safetensors), atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, out = Path(gguf_path), Path(out)
    logger.info(
        "converting %s to a Hugging Face folder at %s (once; later loads use the folder)", source, out
    )
    kwargs = {"gguf_file": source.name}
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), dtype=torch.float32, **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantised; a reload must not expect GGUF
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the folder is a model others may read
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if out.exists():  # the caller converts only when `out` is not a finished folder
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("converted: %s (%d parameters)", out, sum(p.numel() for p in model.parameters()))
    return out
