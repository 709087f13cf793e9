"""The benchmark scripts stay runnable: each one imports and parses its arguments.

The measurements themselves are too slow for the suite (see benchmarks/README.md); this
catches a script broken by a change to the package it measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# One interpreter parses every script's --help: a subprocess per script paid torch's import
# fourteen times (about 2 s each on the CI machine). Each script still runs as __main__ in
# a fresh module namespace, and a failure names its script.
_RUNNER = """
import contextlib, io, json, os, runpy, sys
out = {}
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # as `python benchmarks/X.py` would
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    buf, err = io.StringIO(), io.StringIO()
    code = None
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        code = e.code
    except BaseException as e:
        code, err = 1, io.StringIO(repr(e))
    out[path] = [code, buf.getvalue(), err.getvalue()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, list[Any]]:
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, list[Any]] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_help(script: Path, helps: dict[str, list[Any]]) -> None:
    code, stdout, stderr = helps[str(script)]
    assert code in (0, None), stderr
    assert stdout.startswith("usage:"), (stdout, stderr)


def test_machine_record() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _machine import machine_record
    finally:
        sys.path.remove(str(BENCHMARKS))
    record = machine_record(3)
    assert record["threads"] == 3 and record["cpus"] >= 1
    assert {"when", "cpu", "torch", "vaekit", "load_average", "gpu"} <= record.keys()
