"""Mistakes a user makes and can fix: one line on stderr that says what to do, and exit code 2.

A missing model, data or run folder, a typo in a config, bf16 asked of a CPU, an output folder
already in use: the library raises `UserError` (or a subclass: `ModelSourceError`,
`DataSourceError`, `MissingModelError`, `RegistryError`) with a message that names the file, row or
field. Every command-line entry point runs its `main` through `run_command`, which prints that
message as one line instead of a traceback. Any other exception is a bug in the project and keeps
its traceback. `MEDRLVR_DEBUG=1` shows the traceback of user errors too (an environment variable,
not a flag: transformers' `TrainingArguments` already has a `--debug` option).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

DEBUG_ENV = "MEDRLVR_DEBUG"
EXIT_USER_ERROR = 2  # what argparse uses for a bad command line


class UserError(ValueError):
    """An error in what the user asked for, not in the project; its message is the whole report."""


def one_line(message: str) -> str:
    """The message on one line (continuation lines joined with "; "), for stderr and logs alike."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def run_command(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> None:
    """Run `main(argv)`; a `UserError` becomes `error: <message>` on stderr and exit code 2."""
    try:
        main(list(sys.argv[1:] if argv is None else argv))
    except UserError as err:
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        sys.stderr.write(f"error: {one_line(str(err))}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_USER_ERROR) from None
