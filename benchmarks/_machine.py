"""What every benchmark records about the machine it ran on, in one place.

Timings only compare within one record: the same process, or the same machine under the
same load. ``load_average`` is there to show when a run shared its cores.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import vaekit
from vaekit.evaluate import available_cpus


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's JSON result (creating its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def machine_record(threads: int | None = None) -> dict[str, Any]:
    """The ``machine`` entry of a benchmark's JSON: when, where, which versions, how loaded."""
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "available_cpus": available_cpus(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "vaekit": vaekit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
