"""One line naming the machine and date, printed above every benchmark table."""

from __future__ import annotations

import os
import platform
from datetime import date


def machine_line() -> str:
    return (
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {date.today().isoformat()}"
    )
