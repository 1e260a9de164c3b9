"""Training dynamics of a PPO, GRPO or RLOO run: a figure like Med-RLVR's Figure 2 and a report on the six stages.

    make dynamics RUN=runs/tiny/ppo
    python recipes/dynamics_report.py --run runs/tiny/ppo [--window 5] [--out_dir DIR]

Writes `dynamics.png`, `report.md` and `summary.json` into `<run>/dynamics/` (or `--out_dir`);
`medrlvr_trl.dynamics_report` says what each holds and docs/dynamics.md how the stages are measured.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.configs import parse_config  # noqa: E402
from medrlvr_trl.dynamics_report import write_report  # noqa: E402
from medrlvr_trl.recipe_setup import setup_logging  # noqa: E402
from medrlvr_trl.user_errors import run_command  # noqa: E402


@dataclass
class DynamicsReportArguments:
    run: str = field(
        metadata={"help": "A PPO, GRPO or RLOO output_dir holding metrics.jsonl and completions.jsonl."}
    )
    out_dir: str | None = field(default=None, metadata={"help": "Where to write; default <run>/dynamics."})
    window: int = field(
        default=0, metadata={"help": "Smooth stage shares over this many logged updates; 0: automatic."}
    )


def main(argv: list[str] | None = None) -> dict[str, Path]:
    (args,) = parse_config([DynamicsReportArguments], argv)
    setup_logging()
    return write_report(args.run, args.out_dir, window=args.window)


if __name__ == "__main__":
    run_command(main)
