"""Running a recipe as one stage of a larger job (`make demo`, `make sanity`, `make compare`).

Each stage is a subprocess, offline, with its whole output in its own log file; a failing stage
raises with the end of that log, so the cause is on screen without opening files.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_stage(
    stage: str,
    command: Sequence[str],
    log_path: Path,
    *,
    progress: Callable[[], tuple[int, int | None]] | None = None,
    verbose: bool = False,
) -> None:
    """Run `command` from the repository root, its output in `log_path`, with a progress bar meanwhile.

    `progress()` returns (done, total) read from the stage's own output files (without it the bar
    shows the time spent); `verbose` streams the output instead.
    """
    from tqdm.auto import tqdm

    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **OFFLINE_ENV}
    logger.debug("%s: %s", stage, shlex.join(command))
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            list(command), cwd=REPO, env=env, stdout=None if verbose else log, stderr=subprocess.STDOUT
        )
        bar = None if verbose else tqdm(desc=f"  {stage}", unit="step", leave=False, dynamic_ncols=True)
        try:
            while process.poll() is None:
                time.sleep(1.0)
                if bar is not None and progress is not None:
                    bar.n, bar.total = progress()
                    bar.refresh()
        except BaseException:
            process.kill()
            raise
        finally:
            if bar is not None:
                bar.close()
    if process.returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(
            f"stage {stage!r} failed (exit code {process.returncode}); full log: {log_path}\n{tail}"
        )
