"""train.precision=bf16 against fp32: the trainer's epoch time and what it does to the model.

One process, same config and seed for both precisions:

- speed: ``--repeats`` one-epoch runs of each precision, interleaved, median of the
  trainer's own ``train_seconds``;
- quality: one ``--epochs``-epoch run of each precision, then the test ELBO that the
  trainer computes each epoch (always in float32), and its difference.

bf16 puts only the encoder and decoder networks' matrix products and convolutions in
bfloat16 (autocast); posteriors, priors and likelihoods stay in float32.

Usage:
    python benchmarks/precision.py                                   # tutorial 002 MLP
    python benchmarks/precision.py --config configs/bmnist_conv.yaml --limit 5000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _machine import machine_record

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE.parent / "configs" / "002_aevb_bernoulli.yaml"


def train(
    config: Path, precision: str, epochs: int, limit: int, data_dir: str, workdir: Path
) -> list[dict[str, Any]]:
    """The metrics rows of a fresh run of ``config`` at ``precision``."""
    from vaekit.config import load_config
    from vaekit.train import fit

    cfg = load_config(
        config,
        [
            f"train.precision={precision}",
            f"train.epochs={epochs}",
            f"data.limit={limit}",
            "train.threads=0",
        ],
    )
    with open(os.devnull, "w") as quiet:
        return fit(
            cfg, Path(tempfile.mkdtemp(dir=workdir)), data_dir=data_dir, progress=False, log=quiet
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument(
        "--data-dir",
        default=os.environ.get("VAEKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")),
    )
    p.add_argument("--limit", type=int, default=0, help="first N training images (0 = all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="epochs of the quality runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "precision.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    workdir = Path(tempfile.mkdtemp(prefix="vaekit-bench-precision-"))
    cases = ("fp32", "bf16")

    seconds: dict[str, list[float]] = {c: [] for c in cases}
    for r in range(a.repeats):
        for c in cases:
            row = train(a.config, c, 1, a.limit, a.data_dir, workdir)[-1]
            seconds[c].append(float(row["train_seconds"]))
            print(f"repeat {r + 1}: {c} {row['train_seconds']:.2f} s per epoch", flush=True)
    median = {c: statistics.median(v) for c, v in seconds.items()}

    quality: dict[str, Any] = {}
    for c in cases:
        t = time.perf_counter()
        rows = train(a.config, c, a.epochs, a.limit, a.data_dir, workdir)
        quality[c] = {
            "test_elbo": [r["test"]["elbo"] for r in rows],
            "wall_seconds": time.perf_counter() - t,
        }
        print(f"{c}: test ELBO after {a.epochs} epochs {rows[-1]['test']['elbo']:.3f}", flush=True)

    results = {
        "machine": machine_record(a.threads),
        "config": str(a.config.name),
        "limit": a.limit,
        "epoch_seconds": seconds,
        "epoch_seconds_median": median,
        "speedup_bf16": median["fp32"] / median["bf16"],
        "quality": quality,
        "final_test_elbo_difference_bf16_minus_fp32": quality["bf16"]["test_elbo"][-1]
        - quality["fp32"]["test_elbo"][-1],
    }
    print(
        f"epoch: fp32 {median['fp32']:.2f} s, bf16 {median['bf16']:.2f} s "
        f"(x{results['speedup_bf16']:.2f}); test ELBO after {a.epochs} epochs: "
        f"fp32 {quality['fp32']['test_elbo'][-1]:.3f}, bf16 {quality['bf16']['test_elbo'][-1]:.3f}"
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
