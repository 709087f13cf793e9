"""The benchmark scripts stay runnable: each one imports and parses its arguments.

The measurements themselves are too slow for the suite (see benchmarks/README.md); this
catches a script broken by a change to the package it measures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_is_listed() -> None:
    assert {p.stem for p in SCRIPTS} >= {
        "ddp_throughput",
        "explorer_latency",
        "nll_k5000",
        "precision",
        "train_throughput",
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_help(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_machine_record() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _machine import machine_record
    finally:
        sys.path.remove(str(BENCHMARKS))
    record = machine_record(3)
    assert record["threads"] == 3 and record["cpus"] >= 1
    assert {"when", "cpu", "torch", "vaekit", "load_average", "gpu"} <= record.keys()
