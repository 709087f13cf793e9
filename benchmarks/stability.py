"""Stability options for deep hierarchies, measured against ``train.nan_policy`` alone.

A deep residual-normal hierarchy (6 layers of 16 units, 784-300-300 trunk, 256-unit
per-layer networks) trained at a learning rate ten times the usual one (1e-2) without KL
warm-up on the first ``--limit`` images of static binarized MNIST. Left alone, its KL
terms blow up to 1e5-1e8 nats within two epochs while every loss stays finite, so
``train.nan_policy`` (which acts on non-finite steps only) never fires. Each variant adds
one remedy:

- ``nan_policy=rollback``: the existing guard, in its strictest finite-blind form;
- ``grad_clip``: clipping at the median gradient norm of the first epochs (~2,000);
- ``skip_threshold``: VDVAE's skipping of steps whose norm exceeds 5x that (10,000);
- ``spectral``: NVAE's spectral regularisation (``objective.spectral``);
- ``warm-up``, ``warm-up + kl_balance``: a 2-epoch KL warm-up, then NVAE's KL balancing
  during it.

It reports, per variant and seed, the final test ELBO, the largest per-layer test KL,
the skipped and non-finite steps, and the seconds; then the medians over seeds.

Usage:
    python benchmarks/stability.py --data-dir ../shared/data --threads 1
"""

from __future__ import annotations

import argparse
import io
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
BASE = [
    "model.latent_dim=16",
    "model.posterior.layers=6",
    "model.posterior.style=residual",
    "model.posterior.hidden=256",
    "model.posterior.decoder_reads=1",
    "objective.warmup_epochs=0",
    "train.lr=0.01",
    "train.patience=0",
]
VARIANTS: dict[str, list[str]] = {
    "nan_policy=skip (default)": [],
    "nan_policy=rollback": ["train.nan_policy=rollback"],
    "grad_clip=2000": ["train.grad_clip=2000"],
    "skip_threshold=10000": ["train.skip_threshold=10000"],
    "spectral=0.1": ["objective.spectral=0.1"],
    "warm-up 2": ["objective.warmup_epochs=2"],
    "warm-up 2 + kl_balance": ["objective.warmup_epochs=2", "objective.kl_balance=true"],
}


def run(sets: list[str], seed: int, a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from vaekit.config import load_config
    from vaekit.train import fit

    cfg = load_config(
        "bmnist_hvae",
        [*BASE, *sets, f"train.seed={seed}", f"train.epochs={a.epochs}", f"data.limit={a.limit}"],
    )
    out = Path(tempfile.mkdtemp(dir=workdir))
    t = time.perf_counter()
    try:
        rows = fit(cfg, out, data_dir=a.data_dir, progress=False, log=io.StringIO())
    except Exception as e:  # noqa: BLE001 - a variant that stops training is a result too
        return {
            "stopped": f"{type(e).__name__}: {str(e)[:200]}",
            "seconds": time.perf_counter() - t,
        }
    last = rows[-1]["test"]
    layers = [v for k, v in last.items() if k.startswith("kl_z")]
    return {
        "test_elbo": last["elbo"],
        "max_layer_kl": max(layers),
        "skipped_steps": sum(r.get("skipped_steps", 0) for r in rows),
        "nonfinite_steps": sum(r.get("nonfinite", {}).get("bad_steps", 0) for r in rows),
        "seconds": time.perf_counter() - t,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("VAEKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")),
    )
    p.add_argument("--limit", type=int, default=5000, help="training images (default 5000)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per variant (default 2)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--only", nargs="+", default=None, help="run only these variants (names as in the table)"
    )
    p.add_argument("--out", default=str(HERE / "results" / "stability.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    workdir = Path(tempfile.mkdtemp(prefix="vaekit-stability-"))
    results: dict[str, Any] = {
        "machine": machine_record(a.threads),
        "setting": {
            "config": "bmnist_hvae",
            "overrides": BASE,
            "limit": a.limit,
            "epochs": a.epochs,
        },
        "variants": {},
    }
    for name, sets in VARIANTS.items():
        if a.only and name not in a.only:
            continue
        runs = []
        for seed in range(a.seeds):
            r = run(sets, seed, a, workdir)
            runs.append(r)
            print(f"{name}, seed {seed}: {r}", flush=True)
        done = [r for r in runs if "test_elbo" in r]
        summary: dict[str, Any] = {"runs": runs, "stopped": len(runs) - len(done)}
        for key in ("test_elbo", "max_layer_kl", "skipped_steps", "nonfinite_steps"):
            if done:
                summary[f"median_{key}"] = statistics.median(r[key] for r in done)
        results["variants"][name] = summary
    print()
    print(
        f"{'variant':<28} {'test ELBO':>12} {'max layer KL':>13} {'skipped':>8} {'non-finite':>10}"
    )
    for name, s in results["variants"].items():
        if "median_test_elbo" not in s:
            print(f"{name:<28} stopped in every run")
            continue
        print(
            f"{name:<28} {s['median_test_elbo']:>12.1f} {s['median_max_layer_kl']:>13.1f} "
            f"{s['median_skipped_steps']:>8.0f} {s['median_nonfinite_steps']:>10.0f}"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
