"""Issue 27's ablation of the two-layer HVAE + VampPrior (``bmnist_hvae_vamp``): where do
the 1.7 nats to Tomczak & Welling's 83.19 go?

Every arm is ``configs/bmnist_hvae_vamp.yaml`` with a few settings changed, trained for
the same fixed budget (``--epochs``, default 100) from the same seed, then scored with the
importance-sampled NLL (``vaekit evaluate RUN --k K --weights best``, the best validation
epoch's weights) on the test split. Arms run as separate processes, ``--jobs`` at a time,
each on ``--threads`` threads, through the command line exactly as a user would; each
arm's output goes to ``ROOT/ARM.log``. The script can stop anywhere and be started again:
finished arms are skipped, an interrupted one resumes (``vaekit train --resume``), a
missing score is computed. The table and ``benchmarks/results/hvae_vamp_ablation.json``
are rewritten after every arm.

    nohup nice -n 19 python benchmarks/hvae_vamp_ablation.py --root runs/ablation \\
        --jobs 2 --threads 1 > ablation.log 2>&1 &
    python benchmarks/hvae_vamp_ablation.py --root /tmp/abl --epochs 1 --limit 1000 --k 10

``--limit N`` trains on N examples and scores N of each split (a smoke test, not a
figure). ``--set KEY=VALUE`` changes every arm (an arm's own settings win), e.g.
``--set objective.warmup_epochs=20`` for a warm-up that ends well inside the budget: with
the config's 100-epoch warm-up a 100-epoch budget ends just as the KL weight reaches 1, so
the ``no-warmup`` arm trains on the bound itself for longer than the others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _machine import machine_record, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "hvae_vamp_ablation.json"
CONFIG = "bmnist_hvae_vamp"
# Tomczak & Welling (2018), Table 2: HVAE (L = 2) + VampPrior, test NLL at k = 5000.
PUBLISHED = 83.19

# name -> (what it changes, the --set settings on top of the config)
ARMS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("bmnist_hvae_vamp as it is (tanh, pseudo-inputs 0.05 + 0.01 N(0, 1))", []),
    "gated": (
        "gated units in every network (Dauphin et al. 2017; Tomczak & Welling's GatedDense)",
        ["model.encoder.activation=gated"],
    ),
    "ema": ("weights' moving average 0.999 for scoring (VDVAE, NVAE)", ["train.ema=0.999"]),
    "pseudo-data": (
        "pseudo-inputs start as training examples (their use_training_data_init)",
        ["model.prior.init=data"],
    ),
    "pseudo-clip": (
        "pseudo-inputs clipped to [0, 1] (their code's hardtanh)",
        ["model.prior.clip=true"],
    ),
    "pseudo-lr-0.1": (
        "pseudo-inputs at a tenth of the learning rate",
        ["model.prior.lr_scale=0.1"],
    ),
    "pseudo-lr-10": ("pseudo-inputs at ten times the learning rate", ["model.prior.lr_scale=10"]),
    "decoder-z1": (
        "the decoder reads z1 only, p(x|z1), instead of p(x|z1, z2)",
        ["model.posterior.decoder_reads=1"],
    ),
    "normgrad": (
        "Adam on gradients divided by their norm per tensor (their AdamNormGrad)",
        ["train.optimizer=adam-normgrad"],
    ),
    "he-init": (
        "linear weights start at N(0, 2 / fan-in) (their he_init)",
        ["model.weight_init=he"],
    ),
    "no-warmup": ("no KL warm-up", ["objective.warmup_epochs=0"]),
    "cosine": ("cosine learning-rate schedule over the budget", ["train.lr_schedule=cosine"]),
}


def vaekit(args: list[str], log: Path) -> None:
    """One vaekit command in a child process, its output appended to ``log``."""
    with open(log, "a") as f:
        f.write(f"$ vaekit {' '.join(args)}\n")
        f.flush()
        subprocess.run(
            [sys.executable, "-m", "vaekit", *args], stdout=f, stderr=subprocess.STDOUT, check=True
        )


def epochs_done(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def arm_settings(name: str, a: argparse.Namespace) -> list[str]:
    """Every --set of an arm: the budget and seed, the common ones, then the arm's own."""
    sets = [f"train.epochs={a.epochs}", f"train.seed={a.seed}"]
    if a.limit:
        sets += [f"data.limit={a.limit}", f"train.score_limit={a.limit}"]
    return sets + list(a.set) + ARMS[name][1]


def run_arm(name: str, a: argparse.Namespace) -> None:
    """Train (or resume) one arm, then score its best weights, unless that is done."""
    root = Path(a.root)
    run, log = root / name, root / f"{name}.log"
    if not (run / "config.json").is_file():
        args = ["train", "-c", CONFIG, "--out", str(run), "--threads", str(a.threads)]
        for s in arm_settings(name, a):
            args += ["--set", s]
        vaekit(args, log)
    elif epochs_done(run) < a.epochs:
        vaekit(["train", "--resume", str(run), "--threads", str(a.threads)], log)
    if score(run, a.k) is None:
        args = ["evaluate", str(run), "--k", str(a.k), "--weights", "best", "--split", "test"]
        args += ["--threads", str(a.threads), "--no-progress", "--out", str(eval_file(run, a.k))]
        if a.limit:
            args += ["--limit", str(a.limit)]
        vaekit(args, log)


def eval_file(run: Path, k: int) -> Path:
    return run / f"ablation-eval-k{k}.json"


def score(run: Path, k: int) -> dict[str, Any] | None:
    """An arm's figures: test NLL and ELBO of its best weights, and its training."""
    path = eval_file(run, k)
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return {
        "nll": r["nll"],
        "nll_se": r["nll_se"],
        "elbo": r["elbo"],
        "kl_per_layer": r.get("kl_per_layer"),
        "active_units_per_layer": r.get("active_units_per_layer"),
        "n": r["n"],
        "best_epoch": r["epoch"],
        "epochs": len(rows),
        "best_valid_elbo": max(
            (row["valid"]["elbo"] for row in rows if "valid" in row), default=None
        ),
        "train_seconds": round(sum(float(row.get("seconds", 0.0)) for row in rows), 1),
        "eval_seconds": r.get("seconds"),
    }


def summarise(a: argparse.Namespace, arms: list[str]) -> dict[str, Any]:
    root = Path(a.root)
    runs = {name: score(root / name, a.k) for name in arms}
    base = runs.get("baseline")
    for r in runs.values():
        if r is not None and base is not None:
            r["nll_vs_baseline"] = r["nll"] - base["nll"]
    return {
        "config": CONFIG,
        "published": PUBLISHED,
        "root": str(root),
        "epochs": a.epochs,
        "seed": a.seed,
        "k": a.k,
        "limit": a.limit,
        "common_settings": list(a.set),
        "arms": {
            name: {"what": ARMS[name][0], "settings": ARMS[name][1], "result": runs[name]}
            for name in arms
        },
        "machine": machine_record(a.threads),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| arm | what | test NLL (nats) | vs baseline | test ELBO | best epoch | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in result["arms"].items():
        r = arm["result"]
        if r is None:
            lines.append(f"| {name} | {arm['what']} | not done | | | | |")
            continue
        delta = r.get("nll_vs_baseline")
        lines.append(
            f"| {name} | {arm['what']} | {r['nll']:.2f} ± {r['nll_se']:.2f} | "
            + (f"{delta:+.2f}" if delta is not None else "")
            + f" | {r['elbo']:.2f} | {r['best_epoch']} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/hvae_vamp_ablation", help="folder of the arms' runs")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM",
                   help=f"arms to run (default: all): {', '.join(ARMS)}")  # fmt: skip
    p.add_argument("--epochs", type=int, default=100, help="training budget of every arm")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every arm")
    p.add_argument("--k", type=int, default=1000, help="importance samples of the test NLL")
    p.add_argument("--limit", type=int, default=0,
                   help="train on N examples and score N of each split (0: all; a smoke test)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every arm (repeatable; an arm's own settings win)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="arms trained at once (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each arm")
    p.add_argument("--result", type=Path, default=RESULTS, help="the JSON to write")
    p.add_argument("--summary-only", action="store_true", help="train nothing; tabulate")
    a = p.parse_args(argv)
    Path(a.root).mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    writing = threading.Lock()  # arms finish in parallel threads

    def one(name: str) -> None:
        start = time.perf_counter()
        try:
            run_arm(name, a)
        except subprocess.CalledProcessError:
            failed.append(name)
            print(f"{name}: failed, see {Path(a.root) / f'{name}.log'}", flush=True)
            return
        print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)
        with writing:
            write_result(a.result, summarise(a, a.arms))

    if not a.summary_only:
        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            list(pool.map(one, a.arms))
    result = summarise(a, a.arms)
    write_result(a.result, result)
    print(table(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
