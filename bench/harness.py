"""What the benchmark scripts share: child processes whose failure shows the child's own traceback, and
phase timers wrapped around a trainer's methods that fail loudly when a method is gone.

Each measurement runs in a fresh child (`run_child`) so its peak memory is its own; the child prints
one `RESULT {json}` line (`print_result`). A child that fails ends the parent with the child's
traceback, not only its exit code.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

RESULT_PREFIX = "RESULT "
TAIL_LINES = 60  # of a failed child's stderr, when it printed no traceback


def print_result(result: Mapping[str, Any]) -> None:
    """The child's side: its one result line on stdout."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def failure_report(stderr: str, tail_lines: int = TAIL_LINES) -> str:
    """The part of a failed child's stderr that says why: from its first traceback on, else its last lines.

    Under `accelerate launch` the child's traceback comes first and accelerate's own follows it, so the
    first one is the one that names the bug.
    """
    lines = stderr.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    shown = lines[starts[0] :] if starts else lines[-tail_lines:]
    return "\n".join(shown[-4 * tail_lines :]) or "(it wrote nothing on stderr)"


def run_child(command: Sequence[str], label: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh process; its `RESULT` line, or SystemExit with its traceback."""
    done = subprocess.run(list(command), capture_output=True, text=True, env=env)
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not results:
        why = f"exit code {done.returncode}" if done.returncode else "no RESULT line on stdout"
        raise SystemExit(
            f"benchmark child '{label}' failed ({why}): {shlex.join(command)}\n"
            f"--- the child's stderr ---\n{failure_report(done.stderr)}"
        )
    return json.loads(results[-1][len(RESULT_PREFIX) :])


class PhaseTimer:
    """Seconds and calls per phase of a training loop, from timers wrapped around methods.

    A phase called while another runs is recorded under it ("rollout: generation"), so one wrapped
    method (a model's `forward`) is split by the phase that called it.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[str] = []
        self._wrapped: list[tuple[str, str]] = []  # (Class.method, label)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Time `owner.name` as `label` from now on (an attribute on this one object, not a module patch).

        The method must be defined by `owner`'s class: one that is gone is an error naming it, so a
        refactor cannot silently drop a row of the table.
        """
        if not callable(getattr(type(owner), name, None)):
            raise AttributeError(
                f"{type(owner).__name__}.{name} does not exist any more, and the benchmark times it as "
                f"'{label}'; point the phase table at the method that does this work now"
            )
        bound: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            key = ": ".join([*self._stack, label])
            self._stack.append(label)
            tic = time.perf_counter()
            try:
                return bound(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - tic
                self.calls[key] += 1
                self._stack.pop()

        setattr(owner, name, timed)
        self._wrapped.append((f"{type(owner).__name__}.{name}", label))

    def check_all_called(self) -> None:
        """Every wrapped method ran: a method the loop no longer calls would leave an empty row."""
        called = {key.rsplit(": ", 1)[-1] for key, n in self.calls.items() if n}
        missing = [where for where, label in self._wrapped if label not in called]
        if missing:
            raise RuntimeError(
                f"never called during training: {', '.join(missing)}; the trainer's loop changed, so the "
                "benchmark's phase table must follow it"
            )

    def rows(self, total: float, order: Sequence[str]) -> list[tuple[str, float]]:
        """(phase, seconds): labels in `order`, each phase followed by the phases it called and its own
        untimed rest, then "other": the part of `total` no top-level phase covers."""
        rank = {label: i for i, label in enumerate(order)}

        def children(parent: str | None) -> list[str]:
            prefix, depth = ("", 0) if parent is None else (parent + ": ", parent.count(": ") + 1)
            found = [k for k in self.seconds if k.startswith(prefix) and k.count(": ") == depth]
            return sorted(found, key=lambda k: rank.get(k.rsplit(": ", 1)[-1], len(rank)))

        out: list[tuple[str, float]] = []

        def visit(key: str) -> None:
            out.append((key, self.seconds[key]))
            called = children(key)
            for child in called:
                visit(child)
            if called:
                out.append((f"{key}: rest", self.seconds[key] - sum(self.seconds[c] for c in called)))

        top = children(None)
        for key in top:
            visit(key)
        out.append(("other (metrics, logs, loop)", total - sum(self.seconds[k] for k in top)))
        return out
