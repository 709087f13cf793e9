"""Decoder rows per pass for the importance-sampled NLL: the fitted default against fixed ones.

`vaekit evaluate` sizes each decoder pass (samples x examples) to the decoder's widest
activation (``vaekit.evaluate.fitted_max_rows``). This times ``log_likelihood_split`` on
the same examples with the fitted rows and with each ``--rows`` value, interleaved, in
one process, and reports the median seconds and the NLL each gives (the draws depend on
the pass size, so the NLLs differ by Monte Carlo noise only).

    python benchmarks/nll_rows.py --run runs/bmnist_conv --k 100 --limit 200 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import machine_record, write_result

import vaekit
from vaekit.data import limit_split
from vaekit.evaluate import fitted_max_rows, log_likelihood_split, num_threads

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run directory (vaekit train --out)")
    p.add_argument("--k", type=int, default=100, help="importance samples per example")
    p.add_argument("--limit", type=int, default=200, help="a seeded random N of the test examples")
    p.add_argument("--rows", type=int, nargs="+", default=[2048], help="fixed sizes to compare")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="JSON file (default: results/nll_rows_<run>.json)")
    a = p.parse_args(argv)

    run = vaekit.load(a.run)
    test = limit_split(run.dataset(a.data_dir).test, a.limit, seed=0)
    fitted = fitted_max_rows(run)
    sizes = [fitted, *(r for r in a.rows if r != fitted)]
    seconds: dict[int, list[float]] = {r: [] for r in sizes}
    nll: dict[int, float] = {}
    with num_threads(a.threads), torch.inference_mode():
        for _ in range(a.repeats):
            for rows in sizes:
                t = time.perf_counter()
                ll = log_likelihood_split(run, test, a.k, max_rows=rows, progress=False)
                seconds[rows].append(time.perf_counter() - t)
                nll[rows] = float(-ll.mean())
    median = {r: statistics.median(v) for r, v in seconds.items()}
    print(f"{'rows':>6} {'seconds':>8} {'vs fitted':>9} {'NLL':>9}")
    for r in sizes:
        tag = " (fitted)" if r == fitted else ""
        print(f"{r:>6} {median[r]:>8.2f} {median[r] / median[fitted]:>9.2f} {nll[r]:>9.3f}{tag}")
    result = {
        "benchmark": "nll_rows",
        "machine": machine_record(a.threads),
        "run": str(run.dir),
        "k": a.k,
        "n": len(test),
        "fitted_rows": fitted,
        "seconds": {str(r): v for r, v in seconds.items()},
        "median_seconds": {str(r): v for r, v in median.items()},
        "nll": {str(r): v for r, v in nll.items()},
    }
    out = Path(a.out) if a.out else RESULTS / f"nll_rows_{run.dir.name}.json"
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
