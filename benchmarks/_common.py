"""Shared helpers of the benchmark scripts: the environment header and a table printer."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone


def header(title: str, args=None) -> None:
    """Print the date, Python, torch and CPU count (and the script's arguments)."""
    import torch

    print(f"# {title}")
    print(f"# date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}")
    print(f"# python --version: Python {platform.python_version()} ({sys.executable})")
    print(f"# torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
    print(f"# CPUs: os.cpu_count() = {os.cpu_count()}, usable = {len(os.sched_getaffinity(0))}; "
          f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    if args is not None:
        print(f"# arguments: {' '.join(f'{k}={v}' for k, v in vars(args).items() if not k.startswith('_'))}")
    sys.stdout.flush()


def table(rows: list[tuple], headings: tuple[str, ...]) -> None:
    """Print ``rows`` as a fixed-width text table."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headings)]
    line = "  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    sys.stdout.flush()
