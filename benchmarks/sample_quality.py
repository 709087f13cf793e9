"""Sample quality of several runs and samplers in one table (the README's generation table).

For each run it reads ``RUN/quality-domain.json`` (what ``vaekit quality RUN`` wrote),
scoring whatever sampler is missing first, and prints one markdown row per run and
sampler: FID, precision and recall of the domain network against the test split, with
the run's data row (training examples scored the same way) for scale.

    python benchmarks/sample_quality.py /work/longruns/i18-*-{autoencoder,vae,beta_vae}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _machine import machine_record, write_result

import vaekit
from vaekit.evaluate import num_threads
from vaekit.quality import merge_saved, quality_file_name, sample_quality, saved_scores
from vaekit.rundir import model_label, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument(
        "--samplers", nargs="+", default=["prior", "gmm", "flow", "two-stage"], metavar="NAME"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file (default: results/sample_quality.json)")
    a = p.parse_args(argv)

    rows = []
    print("| data | model | sampler | FID | precision | recall |")
    print("|---|---|---|---|---|---|")
    with num_threads(a.threads):
        for run_dir in map(Path, a.runs):
            scores = saved_scores(run_dir)
            missing = [s for s in a.samplers if s not in scores]
            if missing:
                run = vaekit.load(run_dir)
                path = run_dir / quality_file_name("domain")
                result = merge_saved(path, sample_quality(run, missing, log=sys.stderr))
                write_json(path, result)
                scores = saved_scores(run_dir)
            run = vaekit.load(run_dir)
            data = run.info["data"]["name"]
            for name in ["data", *a.samplers]:
                s = scores[name]
                what = "training examples" if name == "data" else f"{name} ({s['sampler']})"
                print(
                    f"| {data} | {run_dir.name} | {what} | {s['fid']:.2f} | "
                    f"{s['precision']:.3f} | {s['recall']:.3f} |"
                )
                rows.append(
                    {
                        "run": str(run_dir),
                        "model": model_label(run.config),
                        "objective": run.objective_label,
                        "epochs": len(run.metrics),
                        "sampler": name,
                        **s,
                    }
                )
    result = {"benchmark": "sample_quality", "machine": machine_record(a.threads), "rows": rows}
    write_result(Path(a.out) if a.out else RESULTS / "sample_quality.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
