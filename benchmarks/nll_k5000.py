"""Time the k=5000 importance-sampled NLL of a run over its whole test set, against the
machine's float32 matmul speed.

The model's matrix work is counted with torch's FLOP counter (decoder per sample,
encoder per example), the machine's float32 GEMM rate is measured here on the run's own
layer shapes and a square product (best of several), and their quotient is the FLOP
bound: the time the evaluation would take if it were nothing but matmuls at peak.

Usage (defaults: the tutorial-002 Bernoulli model on binarized MNIST, k=5000, every
test example, every CPU):

    python benchmarks/nll_k5000.py --run runs/002_aevb_bernoulli
    python benchmarks/nll_k5000.py --run RUN --limit 200 --k 500     # a quick check

It prints a table and writes JSON to benchmarks/results/. Run it on a quiet machine:
other processes on the same cores slow it down (the load average is recorded).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _machine import machine_record, write_result
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import vaekit
from vaekit.data import limit_split
from vaekit.evaluate import (
    available_cpus,
    elbo_terms,
    fitted_max_rows,
    log_likelihood_split,
    mean_and_se,
    num_threads,
)

RESULTS = Path(__file__).resolve().parent / "results"


def gemm_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Best float32 rate of an (m x k) @ (k x n) product over about ``seconds`` of repeats."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm-up: thread pool, MKL's buffers
    best, start = float("inf"), time.perf_counter()
    reps = 0
    while reps < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
        reps += 1
    return 2.0 * m * k * n / best / 1e9


def linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every Linear layer, in order."""
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


@torch.inference_mode()
def count_flops(run: vaekit.Run, rows: int = 1000) -> tuple[float, float]:
    """Matmul FLOPs of the decoder per latent sample and of the encoder per example."""
    model = run.model
    z = torch.zeros(rows, run.latent_dim)
    y = torch.zeros(rows, dtype=torch.long) if run.num_classes else None
    with FlopCounterMode(display=False) as fc:
        model.decode(z, y)
    decoder = fc.get_total_flops() / rows
    x = torch.zeros(rows, *run.data_shape)
    with FlopCounterMode(display=False) as fc:
        model.encode(x, y)
    encoder = fc.get_total_flops() / rows
    return float(decoder), float(encoder)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run",
        default="runs/002_aevb_bernoulli",
        help="run directory (default: the tutorial-002 Bernoulli run)",
    )
    p.add_argument("--k", type=int, default=5000, help="importance samples per example")
    p.add_argument(
        "--limit", type=int, default=0, help="a seeded random N of the test examples (0 = all)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: every CPU this process may use)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="samples x examples per decoder pass (default: fitted to the decoder)",
    )
    p.add_argument(
        "--data-dir", default=None, help="where the dataset's files are (default: $VAEKIT_DATA_DIR)"
    )
    p.add_argument(
        "--out", default=None, help="JSON file (default: benchmarks/results/nll_k<K>[_n<N>].json)"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    a = p.parse_args(argv)

    try:
        run = vaekit.load(a.run)
    except vaekit.RunError as e:
        print(
            f"error: {e}\n(train the tutorial-002 model with `vaekit train --config configs/002_aevb_bernoulli.yaml` or pass --run)",
            file=sys.stderr,
        )
        return 2
    ds = run.dataset(a.data_dir)
    test = limit_split(ds.test, a.limit, seed=0) if a.limit else ds.test
    n, k = len(test), a.k
    threads = a.threads or available_cpus()
    max_rows = a.max_rows or fitted_max_rows(run)
    load_before = os.getloadavg()

    with num_threads(threads):
        dec_flops, enc_flops = count_flops(run)
        total_flops = n * (k * dec_flops + enc_flops)
        # Peak: the best of a square product and the run's own layer shapes at the row
        # count the evaluation uses.
        # The pass size log_likelihood_split uses: batch examples x equal chunks of samples.
        batch = min(n, max(1, max_rows // k), 1000)
        cap = max(1, max_rows // batch)
        rows = batch * math.ceil(k / math.ceil(k / cap))
        rates = {"2048x2048x2048": gemm_gflops(2048, 2048, 2048)}
        for fan_in, fan_out in linear_shapes(run.model.decoder):
            rates[f"{rows}x{fan_in}x{fan_out}"] = gemm_gflops(rows, fan_in, fan_out, seconds=0.5)
        peak = max(rates.values())

        t, c = time.perf_counter(), time.process_time()
        ll = log_likelihood_split(run, test, k, max_rows=max_rows, progress=a.progress)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        terms = elbo_terms(run, test)
    nll, se = mean_and_se(-ll)
    bound = total_flops / (peak * 1e9)
    load_after = os.getloadavg()

    result: dict[str, Any] = {
        "run": str(run.dir),
        "dataset": ds.name,
        "n": n,
        "k": k,
        "nll": nll,
        "nll_se": se,
        "elbo": terms["elbo"],
        "elbo_se": terms["elbo_se"],
        "wall_seconds": wall,
        # CPU seconds of all threads: on a busy machine wall time counts other processes'
        # turns too, and cpu / threads against the bound shows the code's own efficiency.
        "cpu_seconds": cpu,
        "cpu_ratio_to_bound": cpu / threads / bound,
        "flops": total_flops,
        "decoder_flops_per_sample": dec_flops,
        "encoder_flops_per_example": enc_flops,
        "peak_gflops": peak,
        "gemm_gflops": rates,
        "achieved_gflops": total_flops / wall / 1e9,
        "flop_bound_seconds": bound,
        "ratio_to_bound": wall / bound,
        "threads": threads,
        "max_rows": max_rows,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "machine": machine_record(threads),
    }
    rows_out = [
        ("run", f"{run.dir} ({ds.name}, {n} test examples)"),
        ("k", f"{k}"),
        ("NLL", f"{nll:.2f} +- {se:.2f} nats"),
        ("test ELBO", f"{terms['elbo']:.2f} +- {terms['elbo_se']:.2f} nats"),
        ("matmul work", f"{total_flops / 1e12:.2f} TFLOP ({dec_flops / 1e6:.3f} MFLOP per sample)"),
        ("float32 GEMM peak", f"{peak:.1f} GFLOP/s on {threads} thread(s)"),
        ("wall time", f"{wall:.1f} s ({result['achieved_gflops']:.1f} GFLOP/s)"),
        ("FLOP bound", f"{bound:.1f} s"),
        (
            "ratio",
            f"{wall / bound:.2f}x the bound (CPU time / threads: {cpu / threads / bound:.2f}x)",
        ),
        ("load average", f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"),
    ]
    width = max(len(r[0]) for r in rows_out)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows_out))
    out = (
        Path(a.out) if a.out else RESULTS / (f"nll_k{k}" + (f"_n{n}" if a.limit else "") + ".json")
    )
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
