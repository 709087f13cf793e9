"""The README's disentanglement table: five objectives x several seeds on dsprites-synthetic.

Each run is the bundled config ``dsprites_<model>`` with ``train.seed`` set, trained and
then scored with ``vaekit evaluate RUN --disentanglement`` (disentanglement_lib's full
protocol, every split pooled), through the command line, exactly as the README's commands.
The script can stop anywhere and be started again: finished runs are skipped, an
interrupted one is resumed (``vaekit train --resume``), a missing score is computed. After
every step it rewrites the summary (mean and standard deviation over the seeds done so
far), so it also reports where a long sweep stands.

    nohup nice -n 19 python benchmarks/disentangle_dsprites.py --root runs/dsprites \\
        --seeds 0 1 2 --threads 1 > dsprites.log 2>&1 &
    python benchmarks/disentangle_dsprites.py --root runs/dsprites --summary-only \\
        --figures docs/img

``--references`` scores codes whose answer is known instead, on the same pools: ten
dimensions of noise (DCI informativeness at chance, the majority class's share; SAP 0)
and the true factors, with the metrics that score a predictor on held-out rows:

    nice python benchmarks/disentangle_dsprites.py --references --pools all test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine_record, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "disentangle_dsprites.json"
REFERENCES = RESULTS.with_name("disentangle_references.json")
MODELS = {
    "vae": "VAE",
    "beta_vae": "beta-VAE (beta=4)",
    "tcvae": "beta-TCVAE (beta=6)",
    "factorvae": "FactorVAE (gamma=30)",
    "dipvae": "DIP-VAE-II (lambda=10)",
}
# Columns of the table: (key in the summary, header).
COLUMNS = [
    ("mig", "MIG"),
    ("dci", "DCI disentanglement"),
    ("dci_informativeness", "DCI informativeness"),
    ("sap", "SAP"),
    ("factor_vae", "FactorVAE score"),
    ("beta_vae", "BetaVAE score"),
    ("elbo", "test ELBO (nats)"),
]


def vaekit(*args: str) -> None:
    """One vaekit command in a child process (it inherits this one's niceness)."""
    cmd = [sys.executable, "-m", "vaekit", *args]
    print("$ vaekit " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def epochs_done(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def step(root: Path, model: str, seed: int, threads: int) -> None:
    """Train (or resume) one run, then score it, unless that is done already."""
    run = root / f"{model}-s{seed}"
    config = (
        json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else None
    )
    epochs = config["train"]["epochs"] if config else None
    if config is None:
        vaekit(
            "train", "-c", f"dsprites_{model}", "--set", f"train.seed={seed}",
            "--threads", str(threads), "--out", str(run),
        )  # fmt: skip
    elif epochs_done(run) < epochs:
        vaekit("train", "--resume", str(run), "--threads", str(threads))
    if scores(run) is None:
        vaekit("evaluate", str(run), "--disentanglement", "--threads", str(threads))


def scores(run: Path) -> dict[str, float] | None:
    path = run / "disentanglement.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    if "pool" not in r:
        return None  # scored before DCI's and SAP's test rows were held out: score again
    out = {k: float(r[k]["score"]) for k in ("mig", "dci", "sap", "factor_vae", "beta_vae")}
    out["dci_completeness"] = float(r["dci"]["completeness"])
    out["dci_informativeness"] = float(r["dci"]["informativeness_test"])
    out["elbo"] = float(r["elbo"])
    out["epochs"] = epochs_done(run)
    out["train_seconds"] = sum(
        float(json.loads(line).get("seconds", 0.0))
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    )
    out["score_seconds"] = float(sum(r["seconds"].values()))
    return out


def summarise(root: Path, seeds: list[int], models: list[str]) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    for model in models:
        done = {s: scores(root / f"{model}-s{s}") for s in seeds}
        done = {s: v for s, v in done.items() if v is not None}
        runs[model] = {str(s): v for s, v in done.items()}
        if not done:
            continue
        summary[model] = {"seeds": len(done)}
        for key in {k for v in done.values() for k in v}:
            vals = np.array([v[key] for v in done.values()], dtype=float)
            sd = float(vals.std(ddof=1)) if len(vals) > 1 else None
            summary[model][key] = {"mean": float(vals.mean()), "sd": sd}
    return {"root": str(root), "seeds": seeds, "summary": summary, "runs": runs}


def table(result: dict[str, Any]) -> str:
    head = "| model | seeds | " + " | ".join(h for _, h in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for model, label in MODELS.items():
        s = result["summary"].get(model)
        if s is None:
            continue
        cells = []
        for key, _ in COLUMNS:
            m, sd = s[key]["mean"], s[key]["sd"]
            digits = 1 if key == "elbo" else 3
            cells.append(f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else ""))
        lines.append(f"| {label} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(root: Path, result: dict[str, Any], out: Path, models: list[str]) -> None:
    import vaekit as vk
    from vaekit.disentangle.figures import metrics_plot, traversals_side_by_side
    from vaekit.plots import save_figures

    per_model = {
        MODELS[m]: [v for v in result["runs"].get(m, {}).values()]
        for m in models
        if result["runs"].get(m)
    }
    keys = ["mig", "dci", "sap", "factor_vae", "beta_vae", "elbo"]
    figs = {"disentangle-metrics": metrics_plot(per_model, keys)}
    seed0 = [m for m in models if (root / f"{m}-s0" / "disentanglement.json").is_file()]
    if seed0:
        runs = [vk.load(root / f"{m}-s0") for m in seed0]
        test = runs[0].dataset().test
        figs["disentangle-traversals"] = traversals_side_by_side(
            runs, [MODELS[m] for m in seed0], test, rows=6, n=7, span=2.0, example=7
        )
    for path in save_figures(figs, out, dpi=90):
        print(f"wrote {path}")


def references(pools: list[str], seed: int = 0) -> dict[str, Any]:
    """DCI and SAP of noise codes and of the true factors on each pool of dsprites-synthetic."""
    from vaekit.data import load_dataset
    from vaekit.disentangle.metrics import Protocol, disentanglement_metrics, scored_pool

    ds = load_dataset("dsprites-synthetic")
    out: dict[str, Any] = {}
    for pool in pools:
        part, sizes = scored_pool(ds, pool)
        assert part.factors is not None
        factors = part.factors.numpy()
        # What a predictor that learned nothing scores on held-out rows.
        chance = float(np.mean([np.bincount(f).max() / len(f) for f in factors.T]))
        codes = {
            "noise": np.random.default_rng(seed).normal(size=(len(factors), 10)),
            "factors": factors.astype(float),
        }
        for name, c in codes.items():
            r = disentanglement_metrics(
                c, factors, protocol=Protocol(), seed=seed, metrics=["dci", "sap"]
            )
            out[f"{pool}/{name}"] = {"pool": sizes, "chance": chance, **r}
            d = r["dci"]
            print(
                f"{pool:5s} {name:8s} DCI informativeness {d['informativeness_test']:.3f} "
                f"(train {d['informativeness_train']:.3f}; {d['train_rows']} / {d['test_rows']} "
                f"rows; chance {chance:.3f})  SAP {r['sap']['score']:.3f}",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="folder of the runs (one per model and seed)")
    p.add_argument(
        "--references",
        action="store_true",
        help="score noise codes and the true factors instead of runs",
    )
    p.add_argument(
        "--pools", nargs="+", default=["all", "test"], help="with --references: the pools"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--summary-only", action="store_true", help="train nothing; summarise what is there"
    )
    p.add_argument("--figures", default=None, help="folder for the metrics plot and traversals")
    p.add_argument(
        "--out", default=str(RESULTS), help="summary JSON (default: benchmarks/results/)"
    )
    a = p.parse_args(argv)
    if a.references:
        refs = references(a.pools)
        write_result(REFERENCES, {"machine": machine_record(None), "references": refs})
        return 0
    if not a.root:
        p.error("--root is required (or --references)")
    root = Path(a.root)
    if not a.summary_only:
        # Seed by seed: a complete table of one seed comes first.
        for seed in a.seeds:
            for model in a.models:
                step(root, model, seed, a.threads)
                result = summarise(root, a.seeds, a.models)
                write_result(Path(a.out), {"machine": machine_record(a.threads), **result})
                print(table(result), flush=True)
    result = summarise(root, a.seeds, a.models)
    write_result(Path(a.out), {"machine": machine_record(a.threads), **result})
    print(table(result))
    if a.figures:
        figures(root, result, Path(a.figures), a.models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
