"""``vaekit score``: per-example out-of-distribution and anomaly scores of a data set
(:mod:`vaekit.ood`); given a second set, AUROC, AUPRC and FPR at 80% TPR of every score."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.commands.args import (
    COUNT,
    RUN_HELP,
    SEED,
    THREADS,
    CommandError,
    add_common,
    add_out,
    add_progress,
    add_run_data,
    add_weights,
    int_range,
)
from vaekit.commands.runs import load_run, notes, run_dataset, wrote
from vaekit.data import NAMED
from vaekit.evaluate import num_threads
from vaekit.export import write_array
from vaekit.ood import (
    ScoreSettings,
    anomaly_scores,
    anomaly_threshold,
    check_same_shape,
    default_scores,
    read_scoring_data,
    score_columns,
    score_histograms,
    score_split,
    score_table,
    summarize,
)
from vaekit.rundir import atomic_write, check_not_run_file, json_text, result_header

DESCRIPTION = (
    "Score every example of DATA under the run: importance-sampled log p(x), "
    "the ELBO terms, the input complexity (images, Serra et al. 2020), LLR>k "
    "(hierarchies, Havtorn et al. 2021), the likelihood ratio against --background "
    "(Ren et al. 2019) and likelihood regret (--scores regret, Xiao et al. 2020). Given "
    "OOD too, DATA is the in-distribution set: AUROC, AUPRC and FPR at 80% TPR of every "
    "score, and a figure of both sets' histograms. Writes PREFIX_NAME.npy (a structured "
    "array, a field per score) or .csv per set, and PREFIX_IN_vs_OUT.json/.png."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit score`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "data",
        metavar="DATA",
        help="what to score (the in-distribution set when OOD is given): a named dataset "
        f"({', '.join(NAMED)}), a file or folder, or module:function",
    )
    p.add_argument(
        "ood", nargs="?", default=None, metavar="OOD", help="an out-of-distribution set, as DATA"
    )
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "valid", "test", "all"],
        help="the split of DATA and OOD (default: test; a single .csv/.tsv/.npy/.amat file: "
        "every row in order)",
    )
    p.add_argument(
        "--ood-split",
        default=None,
        choices=["train", "valid", "test", "all"],
        help="the split of OOD when it differs (default: --split's)",
    )
    p.add_argument(
        "--scores",
        nargs="+",
        default=None,
        metavar="NAME",
        help="log_px, elbo (with recon and kl), complexity, llr, ratio, regret (default: "
        "log_px and elbo, complexity for images, llr for hierarchies, ratio with --background)",
    )
    p.add_argument(
        "--k", type=COUNT, default=100, help="importance samples of log p(x) (default: 100)"
    )
    p.add_argument(
        "--elbo-samples", type=COUNT, default=10, help="draws of the ELBO terms (default: 10)"
    )
    p.add_argument(
        "--llr-k",
        type=COUNT,
        nargs="+",
        default=[1],
        metavar="K",
        help="LLR>k: how many bottom layers come from the prior (default: 1)",
    )
    p.add_argument(
        "--llr-samples",
        type=COUNT,
        default=1,
        help="importance samples of both bounds of LLR>k (default: 1, as Havtorn et al.'s script)",
    )
    p.add_argument(
        "--llr-prior-mean",
        action="store_true",
        help="LLR>k: the bottom layers at their prior means (the authors' code) instead of drawn",
    )
    p.add_argument(
        "--background",
        default=None,
        metavar="RUN2",
        help="a run trained on perturbed inputs: adds the likelihood ratio log p(x) - log p_RUN2(x)",
    )
    p.add_argument(
        "--regret-steps",
        type=COUNT,
        default=100,
        help="likelihood regret: Adam steps on each example's encoder copy (default: 100; slow)",
    )
    p.add_argument(
        "--regret-lr",
        type=float,
        default=2e-4,
        help="likelihood regret: learning rate (default: 2e-4)",
    )
    p.add_argument(
        "--threshold",
        default=None,
        metavar="SCORE",
        help="flag DATA's examples whose SCORE is more anomalous than --quantile of the run's "
        "validation split (its test split when it has none): adds a column flag_SCORE",
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=0.99,
        help="--threshold's quantile of the validation scores (default: 0.99, so about 1%% "
        "of in-distribution examples are flagged)",
    )
    p.add_argument(
        "--limit",
        type=int_range(0),
        default=0,
        help="score a seeded N of each set (default: 0, every example)",
    )
    p.add_argument("--batch-size", type=COUNT, default=100, help="examples per pass (default: 100)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the draws (default: 0)")
    p.add_argument(
        "--threads", type=THREADS, default=None, help="torch threads (default: torch's own)"
    )
    p.add_argument(
        "--format",
        default="csv",
        choices=["npy", "csv"],
        help="per-example files: csv (a column per score, default) or npy (a structured array)",
    )
    add_out(
        p,
        "output prefix: PREFIX_NAME.csv (or .npy) per set, PREFIX_IN_vs_OUT.json/.png",
        "RUN/scores",
        metavar="PREFIX",
    )
    add_progress(p)
    add_run_data(p)
    add_weights(p)
    add_common(p)


def _score_name(data: str, split: str | None) -> str:
    """A file-name part for a DATA argument: its name (a file's stem) and split."""
    path = Path(data)
    stem = path.stem if path.suffix else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "data"
    return f"{name}_{split}" if split else name


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit score` as parsed into ``a``; the exit status."""
    run = load_run(a.run, a)
    background = None
    if a.background:
        background = load_run(a.background, a, weights="last", stage="auto")
    scores = a.scores or [*default_scores(run), *(["ratio"] if background is not None else [])]
    settings = ScoreSettings(
        scores=tuple(scores),
        k=a.k,
        elbo_samples=a.elbo_samples,
        llr_k=tuple(a.llr_k),
        llr_samples=a.llr_samples,
        llr_prior_mean=a.llr_prior_mean,
        regret_steps=a.regret_steps,
        regret_lr=a.regret_lr,
        batch_size=a.batch_size,
        seed=a.seed,
    )
    columns_made = score_columns(settings)
    if a.threshold is not None and a.threshold not in columns_made:
        raise CommandError(
            f"--threshold {a.threshold} is not a score computed here; choose one of "
            f"{', '.join(columns_made)} (--scores chooses what is computed)"
        )
    # Every set is read and checked before the long part.
    sets = [(a.data, a.split)]
    if a.ood is not None:
        sets.append((a.ood, a.ood_split or a.split))
    parts = []
    for data, split in sets:
        part, what = read_scoring_data(data, split, data_dir=a.data_dir, limit=a.limit, seed=a.seed)
        check_same_shape(run, part, what)
        parts.append((part, what, _score_name(data, split)))
    if len(parts) == 2 and parts[0][2] == parts[1][2]:
        parts[1] = (parts[1][0], parts[1][1], parts[1][2] + "-ood")
    prefix = Path(a.out) if a.out else run.dir / "scores"
    if prefix.is_dir():
        raise CommandError(
            f"--out {a.out} is a folder; give a file prefix in it, e.g. {prefix / 'scores'}"
        )
    ext = "." + a.format
    names = [p[2] for p in parts]
    files = [prefix.with_name(f"{prefix.name}_{n}{ext}") for n in names]
    summary_json = prefix.with_name(f"{prefix.name}_{names[0]}_vs_{names[-1]}.json")
    figure = summary_json.with_suffix(".png")
    for path in [*files, *([summary_json, figure] if len(parts) == 2 else [])]:
        check_not_run_file(path, "--out", "scores")
    progress = sys.stderr.isatty() if a.progress is None else a.progress
    result: dict[str, Any] = {}
    columns = []
    with num_threads(a.threads) as used:
        for part, what, _ in parts:
            cols, seconds = score_split(
                run, part, settings, background=background, progress=progress
            )
            columns.append(cols)
            result.setdefault("sets", []).append({"data": what, "n": len(part), "seconds": seconds})
        if a.threshold is not None:
            ds = run_dataset(a, run)
            which = "valid" if ds.valid is not None else "test"
            ref, _ = score_split(run, ds.split(which), settings, background=background)
            name = a.threshold
            cut = anomaly_threshold(anomaly_scores(ref)[name], a.quantile)
            flags = anomaly_scores(columns[0])[name] > cut
            columns[0]["flag_" + name] = flags.astype(np.float64)
            result["threshold"] = {
                "score": name,
                "quantile": a.quantile,
                "split": which,
                "n": len(ds.split(which)),
                "value": cut,
                "anomaly_orientation": "higher is more anomalous",
                "flagged": int(flags.sum()),
                "of": len(flags),
            }
            print(
                f"flagged {int(flags.sum())} of {len(flags)} examples: {name} beyond the "
                f"{a.quantile} quantile of the run's {which} split",
                file=sys.stderr,
            )
        result["threads"] = used
    for path, cols in zip(files, columns, strict=True):
        if a.format == "npy":
            write_array(path, score_table(cols), "npy")
        else:
            write_array(path, np.stack(list(cols.values()), axis=1), "csv", list(cols))
    header = result_header(run, parts[0][1], a.split or "test", len(parts[0][0]))
    settings_out = {
        "scores": list(scores),
        "k": a.k,
        "elbo_samples": a.elbo_samples,
        "llr_k": list(a.llr_k),
        "llr_samples": a.llr_samples,
        "llr_prior_mean": a.llr_prior_mean,
        "background": None if background is None else str(background.dir),
        "regret_steps": a.regret_steps if "regret" in scores else None,
        "seed": a.seed,
    }
    result = header | {"settings": settings_out} | result | {"files": [str(f) for f in files]}
    written = list(files)
    if len(parts) == 2:
        metrics = summarize(columns[0], columns[1])
        result["ood"] = parts[1][1]
        result["metrics"] = metrics
        result["positive"] = "the OOD set; every score oriented so that higher is more anomalous"
        fig = score_histograms(
            columns[0], columns[1], in_label=names[0], out_label=names[1], metrics=metrics
        )
        with atomic_write(figure, "wb") as f:
            fig.savefig(f, dpi=100, format="png")
        with atomic_write(summary_json, "w") as f:
            f.write(json_text(result) + "\n")
        written += [summary_json, figure]
        print(json_text(result))
    else:
        print(f"scored {len(parts[0][0])} examples of {parts[0][1]}: {', '.join(columns[0])}")
    wrote(*written, err=len(parts) == 2)
    notes(run)
    return 0
