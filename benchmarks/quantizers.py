"""Quantizers beside each other on Fashion-MNIST at equal bits per image: VQ (with and
without EMA and restarts, and with a k-means start and cosine codes), residual VQ, FSQ
and LFQ.

Each method codes a 7x7 grid of positions (the conv encoder of fashion_mnist_vqvae, a
discretized logistic likelihood) with the same bits per position at each budget: 6 bits
(64 codes; residual VQ 2 x 8) and 10 bits (1024 codes; residual VQ 2 x 32). For each run
it records, by epoch, the codes in use and their perplexity on the validation batches
and the reconstruction -log p(x|z) in nats; then it fits a PixelCNN prior to the frozen
codes (the prior stage, ``vaekit train --resume RUN --stage prior``) and reports the
bound -log p(x|z) - log p(z) on test images in bits per dimension, and the seconds per
training epoch.

It is a small budget (a subset of the images, a few epochs, one thread per run): the
figures rank the methods early in training on a shared, busy machine, and are no
converged results. Usage (the results page's table: 36 runs, 75 minutes of wall time four
to six at once on 2 busy cores):

    nice -n 5 python benchmarks/quantizers.py --train 4000 --epochs 5 --prior-epochs 3 \\
        --test 2000 --score 1000 --seeds 0 1 2 --threads 1 --jobs 4 \\
        --png docs/img/quantizers-codebook-use.png
    python benchmarks/quantizers.py --table          # the page's tables from the JSON
    python benchmarks/quantizers.py --cost cost.json # CPU seconds per 1000 images

Runs go ``--jobs`` at a time (worker processes of ``--threads`` threads each; stop them
all by the process group, as a worker outlives its parent to the end of its run). It
prints each run as it finishes and rewrites the JSON (``--out``, default
benchmarks/results/quantizers.json) after every one; with ``--resume`` it keeps the runs
already in that file (which must have the same budget) and does only the missing ones, so
the same command continues an interrupted measurement; ``--merge FILE...`` keeps the runs
of other files of the same budget as well (a seed measured apart, to its own ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from _machine import machine_record, write_result

import vaekit
from vaekit.config import config_from_dict
from vaekit.data import limit_split
from vaekit.distributions.codes import code_usage
from vaekit.rundir import read_metrics
from vaekit.stages import train_prior

RESULTS = Path(__file__).resolve().parent / "results"
POSITIONS = 49  # the 7 x 7 map of a 28 x 28 image after two stride-2 stages
VQ = {"name": "vq", "code_dim": 16}


def methods(bits: int) -> dict[str, dict[str, Any]]:
    """Each method's posterior at ``bits`` bits per position (6 or 10)."""
    k = 2**bits
    fsq = {6: [4, 4, 4], 10: [4, 4, 4, 4, 4]}[bits]  # exactly 2^bits codes
    return {
        "vq ema+restarts": VQ | {"codes": k},
        "vq grad, no restarts": VQ | {"codes": k, "ema": False, "restart_dead": False},
        "vq kmeans+cosine": VQ | {"codes": k, "init": "kmeans", "cosine": True},
        "rvq 2 quantizers": VQ
        | {"name": "rvq", "num_quantizers": 2, "codes": 2 ** (bits // 2), "dropout": 0.5},
        "fsq": {"name": "fsq", "levels": fsq},
        "lfq": {"name": "lfq", "code_dim": bits},
    }


def latent_dim(post: dict[str, Any]) -> int:
    if post["name"] == "fsq":
        return POSITIONS * len(post["levels"])
    if post["name"] == "lfq":
        return POSITIONS * post["code_dim"]
    return POSITIONS * post["code_dim"] * post.get("num_quantizers", 1)


def config(post: dict[str, Any], a: argparse.Namespace, seed: int) -> Any:
    return config_from_dict(
        {
            "data": {"name": "fashion-mnist", "valid_fraction": 0.1, "limit": a.train},
            "model": {
                "latent_dim": latent_dim(post),
                "encoder": {
                    "name": "conv",
                    "channels": [16, 32],
                    "blocks": 1,
                    "grid": True,
                    "activation": "relu",
                },
                "posterior": post,
                "prior": {"name": "categorical", "learned": False},
                "likelihood": {"name": "discretized-logistic", "components": 1, "levels": 256},
            },
            "objective": {"name": "elbo"},
            "train": {
                "epochs": a.epochs,
                "batch_size": 100,
                "lr": 0.001,
                "grad_clip": 100.0,
                "seed": seed,
                "score_limit": a.score,
            },
        }
    )


@torch.no_grad()
def bound_bits(run_dir: Path, n: int) -> dict[str, float]:
    """-log p(x|z) and -log p(z) (nats per image) of the first ``n`` test images with the
    learned prior, and their sum in bits per dimension."""
    run = vaekit.load(run_dir)  # the prior stage
    model = run.model.eval()
    x = limit_split(run.dataset().test, n, seed=0).x
    recon, prior = [], []
    for i in range(0, len(x), 250):
        xb = x[i : i + 250]
        z = model.encode(xb).mode
        recon.append(-model.decode(z).log_prob(xb).reshape(len(xb), -1).sum(-1))
        prior.append(-model.prior.log_prob(z))
    r, p = torch.cat(recon).mean().item(), torch.cat(prior).mean().item()
    dims = math.prod(x.shape[1:])
    return {"recon": r, "rate": p, "bits_per_dim": (r + p) / (dims * math.log(2))}


def one(name: str, post: dict[str, Any], bits: int, seed: int, a: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        vaekit.fit(config(post, a, seed), run_dir, threads=a.threads, progress=False)
        wall = time.perf_counter() - start
        rows = read_metrics(run_dir)
        train_prior(
            run_dir,
            epochs=a.prior_epochs,
            overrides=["model.prior=pixelcnn", "model.prior.hidden=32", "model.prior.layers=4"],
            threads=a.threads,
            progress=False,
        )
        bound = bound_bits(run_dir, a.test)
        run = vaekit.load(run_dir, stage="model")
        head = run.model.encoder.head
        x = limit_split(run.dataset().test, a.test, seed=0).x
        with torch.no_grad():
            codes = head.codes(run.model.eval().encode(x).mode)
        valid = [r.get("valid") or r.get("test") or {} for r in rows]
        return {
            "method": name,
            "bits_per_position": bits,
            "bits_per_image": bits * POSITIONS,
            "seed": seed,
            "posterior": post,
            "epochs": [r["epoch"] for r in rows],
            "codes_used": [round(v.get("codes_used", float("nan")), 2) for v in valid],
            "perplexity": [round(v.get("perplexity", float("nan")), 2) for v in valid],
            "recon_nats": [round(v.get("recon", float("nan")), 2) for v in valid],
            "epoch_seconds": round(statistics.median(r["train_seconds"] for r in rows), 2),
            "wall_seconds": round(wall, 1),
            # The machine's load as the run ended: its timings are only as quiet as this.
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "test_codes": code_usage(codes, head.space),
            "test_recon_nats": round(bound["recon"], 2),
            "test_prior_nats": round(bound["rate"], 2),
            "test_bits_per_dim": round(bound["bits_per_dim"], 4),
        }


def cost(a: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU seconds per 1,000 training images of each method at each budget, one thread:
    the process time of a one-epoch fit on 2,300 images minus that of one on 300 (the
    fixed costs, building, scoring and saving, cancel), after a fit that pays the
    process's one-time costs. Process time, unlike the runs' wall-clock epochs, barely
    depends on what else the machine runs."""

    def fit(post: dict[str, Any], n: int) -> float:
        b = argparse.Namespace(**(vars(a) | {"train": n, "epochs": 1, "score": 100}))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.process_time()
            vaekit.fit(config(post, b, 0), Path(tmp) / "run", threads=1, progress=False)
            return time.process_time() - start

    fit(methods(6)["fsq"], 300)  # warm-up: imports, data, allocator
    out = []
    for bits in a.bits:
        for name, post in methods(bits).items():
            if a.only and name not in a.only:
                continue
            per_1000 = round((fit(post, 2300) - fit(post, 300)) / 2, 2)
            out.append({"method": name, "bits_per_position": bits, "cpu_s_per_1000": per_1000})
            print(f"{name:<22} {bits:>4} {per_1000:>7.2f} CPU s / 1000 images", flush=True)
    return out


def logged_codes(r: dict[str, Any]) -> int:
    """The codebook whose use the epochs log: a residual VQ logs its first quantizer's."""
    post = r["posterior"]
    return int(post["codes"]) if post["name"] == "rvq" else 2 ** r["bits_per_position"]


def figure(records: list[dict[str, Any]], path: Path) -> None:
    """Codes in use (top) and their perplexity (bottom) by epoch on the validation
    batches, a column per budget: the mean over seeds, their range shaded."""
    from matplotlib.figure import Figure

    budgets = sorted({r["bits_per_position"] for r in records})
    rows = [("codes_used", "codes in use"), ("perplexity", "codebook perplexity")]
    fig = Figure(figsize=(10, 7.2), layout="constrained")
    grid = fig.subplots(len(rows), len(budgets), squeeze=False)
    for (key, what), axes in zip(rows, grid, strict=True):
        for ax, bits in zip(axes, budgets, strict=True):
            at = [r for r in records if r["bits_per_position"] == bits]
            for name in dict.fromkeys(r["method"] for r in at):
                mine = [r for r in at if r["method"] == name]
                k = logged_codes(mine[0])
                by_epoch = list(zip(*(r[key] for r in mine), strict=True))
                epochs = mine[0]["epochs"]
                mean = [statistics.mean(v) for v in by_epoch]
                line = ax.plot(epochs, mean, marker="o", ms=3)[0]
                # The seeds' range: a band, so that a difference inside it reads as a tie.
                low, high = [min(v) for v in by_epoch], [max(v) for v in by_epoch]
                ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
                line.set_label(name if k == 2**bits else f"{name} (first quantizer, of {k})")
            ax.set_xticks(at[0]["epochs"])
            ax.axhline(2**bits, color="grey", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.set(
                title=f"{bits} bits per position (dotted: all {2**bits} codes)",
                xlabel="epoch",
                ylabel=f"{what} (validation batches)",
                ylim=(0.9, 2**bits * 1.3),
            )
            if key == rows[0][0]:  # the same lines below
                ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def spread(values: list[float], digits: int) -> str:
    """Mean (min–max) of the seeds' values."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean = statistics.mean(values)
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def tables(records: list[dict[str, Any]]) -> str:
    """The results page's tables (Markdown): per budget, each method's mean over its
    seeds with their range."""
    out = []
    for bits in sorted({r["bits_per_position"] for r in records}):
        mine = [r for r in records if r["bits_per_position"] == bits]
        k = 2**bits
        out += [
            f"**{bits} bits per position, {bits * POSITIONS} bits per image** "
            f"({k} codes per position; seeds {sorted({r['seed'] for r in mine})})",
            "",
            f"| method | codes used (test, of {k}) | perplexity (test) | -log p(x\\|z), nats "
            "| -log p(z), PixelCNN, nats | bound, bits/dim | s / epoch |",
            "|---|---|---|---|---|---|---|",
        ]
        most = max(sum(r["method"] == m for r in mine) for m in {r["method"] for r in mine})
        for name in dict.fromkeys(r["method"] for r in mine):
            rs = [r for r in mine if r["method"] == name]
            shown = name if len(rs) == most else f"{name} ({len(rs)} of {most} seeds)"
            cells = [
                spread([r["test_codes"]["used"] for r in rs], 0),
                spread([r["test_codes"]["perplexity"] for r in rs], 1),
                spread([r["test_recon_nats"] for r in rs], 0),
                spread([r["test_prior_nats"] for r in rs], 0),
                spread([r["test_bits_per_dim"] for r in rs], 3),
                spread([r["epoch_seconds"] for r in rs], 1),
            ]
            out.append(f"| {shown} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# What a run's result depends on besides its method, budget and seed: --resume keeps only
# runs of the same settings.
BUDGET = ("train", "epochs", "prior_epochs", "test", "score", "threads")


def row(r: dict[str, Any]) -> str:
    t = r["test_codes"]
    return (
        f"{r['method']:<22} {r['bits_per_position']:>4} {r['seed']:>4} "
        f"{t['used']:>4}/{t['codes']:<4} {t['perplexity']:>10.1f} {r['test_recon_nats']:>7.1f} "
        f"{r['test_bits_per_dim']:>8.4f} {r['epoch_seconds']:>7.1f}"
    )


def previous(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs to keep: those already in ``--out`` (with ``--resume``) and in the
    ``--merge`` files, one per method, budget and seed; a file of another budget is refused."""
    files = ([a.out] if a.resume and a.out.exists() else []) + list(a.merge)
    mine = {k: getattr(a, k) for k in BUDGET}
    kept: dict[tuple[int, str, int], dict[str, Any]] = {}
    for path in files:
        old = json.loads(path.read_text())
        theirs = {k: old.get("settings", {}).get(k) for k in BUDGET}
        if theirs != mine:
            raise SystemExit(
                f"{path} holds runs of another budget ({theirs}, this command: {mine}); "
                "give the command the same settings (or, for --out, another file)"
            )
        for r in old["runs"]:
            kept.setdefault(key_of(r), r)
    return list(kept.values())


def save(a: argparse.Namespace, records: list[dict[str, Any]], order: list[tuple]) -> None:
    """Write every finished run to ``--out`` (after each one, so none is lost)."""
    rank = {key: i for i, key in enumerate(order)}
    runs = sorted(records, key=lambda r: rank.get(key_of(r), len(rank)))
    result = {
        "budget": (
            f"{a.train} training images, {a.epochs} epochs, a PixelCNN prior (4 x 32) "
            f"fitted for {a.prior_epochs} epochs, {a.test} test images, seeds "
            f"{sorted({r['seed'] for r in runs})}, {a.threads} thread(s) per run, "
            "several runs at once on a shared, busy machine"
        ),
        "settings": vars(a)
        | {"out": str(a.out), "png": str(a.png), "merge": [str(m) for m in a.merge]},
        "machine": machine_record(a.threads),
        "runs": runs,
    }
    write_result(a.out, result)


def key_of(r: dict[str, Any]) -> tuple[int, str, int]:
    return r["bits_per_position"], r["method"], r["seed"]


def work(job: tuple[str, dict[str, Any], int, int, argparse.Namespace]) -> dict[str, Any]:
    """One run in a worker process (its own torch threads)."""
    name, post, bits, seed, a = job
    torch.set_num_threads(a.threads)
    return one(name, post, bits, seed, a)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=4000, help="training images (a subset)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the autoencoder")
    p.add_argument("--prior-epochs", type=int, default=3, help="epochs of the PixelCNN prior")
    p.add_argument("--test", type=int, default=1000, help="test images for the bound")
    p.add_argument("--score", type=int, default=500, help="validation images scored per epoch")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--bits", type=int, nargs="+", default=[6, 10], help="bits per position")
    p.add_argument("--only", nargs="*", default=None, help="methods to run (default all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (worker processes)")
    p.add_argument("--out", type=Path, default=RESULTS / "quantizers.json", help="JSON file")
    p.add_argument(
        "--resume", action="store_true", help="keep --out's runs (same budget), do the rest"
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="JSON files of other runs of the same budget to keep (e.g. a seed run apart)",
    )
    p.add_argument("--png", type=Path, default=None, help="figure of codebook use by epoch")
    p.add_argument(
        "--replot", action="store_true", help="only draw --png from --out's (and --merge's) runs"
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="only print --out's (and --merge's) runs as the page's tables",
    )
    p.add_argument(
        "--cost",
        type=Path,
        default=None,
        help="only measure each method's CPU seconds per 1000 training images, to this JSON",
    )
    a = p.parse_args(argv)
    if a.cost:
        torch.set_num_threads(1)
        record = {"cpu": cost(a), "machine": machine_record(1)}
        write_result(a.cost, record)
        return 0
    if a.table or a.replot:
        shown: dict[tuple[int, str, int], dict[str, Any]] = {}
        for path in [a.out, *a.merge]:  # one run per method, budget and seed, --out's first
            for r in json.loads(path.read_text())["runs"]:
                shown.setdefault(key_of(r), r)
        runs = sorted(shown.values(), key=lambda r: (r["bits_per_position"], r["seed"]))
        if a.table:
            print(tables(runs))
        if a.replot:
            figure(runs, a.png)
        return 0
    torch.set_num_threads(a.threads)
    # Seed by seed, so that a run cut short has whole seeds of every method.
    jobs = [
        (name, post, bits, seed, a)
        for seed in a.seeds
        for bits in a.bits
        for name, post in methods(bits).items()
        if not a.only or name in a.only
    ]
    order = [(bits, name, seed) for bits in a.bits for name in methods(bits) for seed in a.seeds]
    records = previous(a)
    done = {key_of(r) for r in records}
    todo = [j for j in jobs if (j[2], j[0], j[3]) not in done]
    print(f"{len(records)} run(s) kept, {len(todo)} to do", flush=True)
    print(
        f"{'method':<22} {'bits':>4} {'seed':>4} {'used':>9} {'perplexity':>10} "
        f"{'recon':>7} {'bits/dim':>8} {'s/epoch':>7}",
        flush=True,
    )
    for r in records:
        print(row(r), "(kept)", flush=True)
    if a.jobs > 1:
        # Worker processes (spawned: a forked torch can hang in its thread pools).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=a.jobs, mp_context=context) as pool:
            for future in as_completed([pool.submit(work, j) for j in todo]):
                r = future.result()
                records.append(r)
                print(row(r), flush=True)
                save(a, records, order)
    else:
        for j in todo:
            records.append(work(j))
            print(row(records[-1]), flush=True)
            save(a, records, order)
    if not todo:
        save(a, records, order)
    if a.png:
        figure(records, a.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
