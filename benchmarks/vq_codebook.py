"""How VQ-VAE runs use their codebooks, epoch by epoch: with and without EMA and restarts.

Reads what training logged (every VQ run's metrics hold the batch perplexity of the
codebook and the number of codes in use, per split) and, for each run, counts the codes
its last weights give the whole test split. Nothing is trained.

Usage (the README's comparison; each run is `vaekit train -c bmnist_vqvae` with the
`--set` of its row):

    python benchmarks/vq_codebook.py runs/vq runs/vq_ema_norestart runs/vq_grad_norestart \\
        runs/vq_grad_restart --out benchmarks/results/vq_codebook.json --png docs/img/vq-codebook.png

It prints a table and writes JSON (and a figure of validation perplexity by epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import vaekit
from vaekit.data import limit_split
from vaekit.distributions.codes import code_usage
from vaekit.rundir import part_labels, read_metrics


def _split(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("valid") or row.get("test") or {}


def codebook_record(run_dir: Path, limit: int) -> dict[str, Any]:
    """One run: its codebook settings, per-epoch perplexity and codes in use, and the
    codes its last weights give the test split (a seeded random ``limit`` of it; 0 = all)."""
    run = vaekit.load(run_dir, stage="model")
    head = run.model.encoder.head
    o = run.config.model.posterior.options
    rows = read_metrics(run_dir)
    test = run.dataset().test
    x = limit_split(test, limit, seed=0).x if limit else test.x
    with torch.no_grad():
        codes = torch.cat(
            [head.codes(run.encode(x[i : i + 500]).mode) for i in range(0, len(x), 500)]
        )
    return {
        "run": str(run_dir),
        "posterior": part_labels(run.config)["posterior"],
        "ema": o.ema,
        "restart_dead": o.restart_dead,
        "epochs": [r["epoch"] for r in rows],
        "perplexity": [round(_split(r).get("perplexity", float("nan")), 3) for r in rows],
        "codes_used": [round(_split(r).get("codes_used", float("nan")), 2) for r in rows],
        "recon": [round(_split(r).get("recon", float("nan")), 3) for r in rows],
        "test_codes": code_usage(codes, head.space),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="VQ-VAE run directories")
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="a seeded random N of the test examples to encode (0 = all)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--png", type=Path, default=None, help="figure of perplexity by epoch")
    a = p.parse_args(argv)
    records = [codebook_record(r, a.limit) for r in a.runs]
    print(
        f"{'run':<40} {'EMA':>4} {'restarts':>8} {'epochs':>6} {'perplexity':>10} {'used':>5} {'test used':>9} {'test perplexity':>15}"
    )
    for r in records:
        t = r["test_codes"]
        print(
            f"{Path(r['run']).name:<40} {str(r['ema']):>4} {str(r['restart_dead']):>8} "
            f"{len(r['epochs']):>6} {r['perplexity'][-1]:>10.2f} {r['codes_used'][-1]:>5.1f} "
            f"{t['used']:>5}/{t['codes']:<3} {t['perplexity']:>15.2f}"
        )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"runs": records}, indent=2) + "\n")
        print(f"wrote {a.out}")
    if a.png:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.6), layout="constrained")
        left, right = fig.subplots(1, 2)
        for r in records:
            label = f"EMA {'on' if r['ema'] else 'off'}, restarts {'on' if r['restart_dead'] else 'off'}"
            left.plot(r["epochs"], r["perplexity"], marker="o", ms=3, label=label)
            right.plot(r["epochs"], r["recon"], marker="o", ms=3, label=label)
        k = records[0]["test_codes"]["codes"]
        left.axhline(k, color="grey", lw=0.8, ls=":")
        left.set(
            xlabel="epoch", ylabel="codebook perplexity (validation batches)", ylim=(0, k * 1.05)
        )
        right.set(xlabel="epoch", ylabel="-log p(x|z_q), nats (validation)")
        left.legend(fontsize=8)
        a.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.png, dpi=100)
        print(f"wrote {a.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
