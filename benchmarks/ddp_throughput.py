"""Training throughput of 1 process against N processes under torchrun (and 1 GPU if present).

Each setting trains the same config from scratch with ``vaekit train`` (N > 1 through
``torchrun --nproc_per_node=N``) and reads the run's metrics: images per second of the
training loop (``train_seconds``, evaluation excluded) in the last epoch (the first one
also pays for warm-up when more than one is run) and the test ELBO.

The effective batch is held fixed: with ``batch_size`` B in the config, N processes each
take B / N per step, so every setting takes the same optimisation steps (see
vaekit.train.loop). The CPU's cores are shared out: 1 process gets all of them as
threads, N processes get cores / N threads each.

Usage (defaults: the tutorial-002 MLP on binarized MNIST, 1 and 2 processes, 2 epochs):

    python benchmarks/ddp_throughput.py --data-dir ../shared/data
    python benchmarks/ddp_throughput.py --epochs 1 --limit 5000       # a quick check

It prints a table and writes JSON to benchmarks/results/ddp_throughput.json. Run it on a
quiet machine: other processes on the same cores slow it down (the load average is
recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from _machine import machine_record

from vaekit.rundir import read_metrics

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_setting(
    config: Path,
    procs: int,
    device: str,
    epochs: int,
    limit: int,
    data_dir: str | None,
    work: Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train once with ``procs`` processes and return throughput and test ELBO."""
    cfg = yaml.safe_load(config.read_text())
    batch = int(cfg.get("train", {}).get("batch_size", 100))
    if batch % procs:
        raise SystemExit(f"batch_size {batch} of {config} does not split into {procs} processes")
    cores = os.cpu_count() or 1
    if threads is None:
        threads = max(1, cores // procs) if device == "cpu" else 1
    out = work / f"{device}-{procs}-{threads}"
    args = [
        "-m", "vaekit", "train", "--config", str(config), "--out", str(out), "--epochs", str(epochs),
        "--set", f"train.batch_size={batch // procs}", "--set", f"train.threads={threads}",
        "--set", f"train.device={device}", "--set", "train.eval_batch_size=2000",
    ]  # fmt: skip
    if limit:
        args += ["--set", f"data.limit={limit}"]
    if data_dir:
        args += ["--data-dir", data_dir]
    if procs > 1:
        launcher = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        ]  # fmt: skip
        cmd = launcher + args
    else:
        cmd = [sys.executable, *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(
            f"training with {procs} process(es) failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        )
    rows = read_metrics(out)
    info = json.loads((out / "model.json").read_text())["data"]
    n = int(info["sizes"]["train"]) if not limit else min(limit, int(info["sizes"]["train"]))
    used = (n // procs) * procs  # the n mod N left-over examples are not trained on
    last = rows[-1]
    return {
        "setting": f"{procs} x {device} {threads}t" if procs > 1 else f"1 {device} {threads}t",
        "processes": procs,
        "device": device,
        "threads_per_process": threads,
        "batch_per_process": batch // procs,
        "effective_batch": batch,
        "train_examples_per_epoch": used,
        "epochs": len(rows),
        "train_seconds_last_epoch": last["train_seconds"],
        "images_per_s": round(used / last["train_seconds"], 1),
        "test_loss": round(last["test"]["loss"], 3),
        "test_elbo": round(last["test"].get("elbo", -last["test"]["loss"]), 3),
        "wall_seconds_total": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "002_aevb_bernoulli.yaml")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts on CPU")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--limit", type=int, default=0, help="train on the first N examples only (0 = all)"
    )
    p.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR"))
    p.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also 1 GPU (default: when CUDA is available)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "ddp_throughput.json")
    a = p.parse_args(argv)

    # One process with one thread as well: it separates the gain of more threads from
    # the gain of more processes.
    settings: list[tuple[int, str, int | None]] = [(n, "cpu", None) for n in a.procs]
    if (os.cpu_count() or 1) > 1:
        settings.insert(0, (1, "cpu", 1))
    if a.gpu or (a.gpu is None and torch.cuda.is_available()):
        settings.append((1, "cuda", None))
    rows = []
    with tempfile.TemporaryDirectory(prefix="vaekit-ddp-bench-") as work:
        for procs, device, threads in settings:
            print(f"training with {procs} process(es) on {device} ...", flush=True)
            rows.append(
                run_setting(
                    a.config, procs, device, a.epochs, a.limit, a.data_dir, Path(work), threads
                )
            )
    # The reference: one process with every core as a thread (the default way to train).
    cores = os.cpu_count() or 1
    base = next(
        (r for r in rows if r["processes"] == 1 and r["threads_per_process"] == cores), rows[0]
    )
    for r in rows:
        r["speedup_vs_1_process"] = round(r["images_per_s"] / base["images_per_s"], 2)

    print(
        f"\n{'setting':<12} {'threads':>7} {'batch/proc':>10} {'images/s':>10} {'speed-up':>8} {'test ELBO':>10}"
    )
    for r in rows:
        print(
            f"{r['setting']:<12} {r['threads_per_process']:>7} {r['batch_per_process']:>10} "
            f"{r['images_per_s']:>10.0f} {r['speedup_vs_1_process']:>8.2f} {r['test_elbo']:>10.2f}"
        )
    result = {
        "benchmark": "ddp_throughput",
        "machine": machine_record(),
        "config": str(a.config.relative_to(ROOT) if a.config.is_relative_to(ROOT) else a.config),
        "epochs": a.epochs,
        "limit": a.limit,
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
