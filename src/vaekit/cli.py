"""Command line: thin subcommands over the library.

    vaekit train --config FILE [--dataset NAME_OR_PATH] [--epochs N] [--out RUN] [--seed S] [--set k=v ...]
    vaekit train --resume RUN [--epochs N] [--patience N] [--threads N]
    vaekit evaluate RUN [--k 5000] [--limit N] [--threads T]
    vaekit plot RUN [--which NAME ...] [--out DIR]
    vaekit compare RUN_A RUN_B [--out FILE]
    vaekit curves RUN [RUN ...] [--split valid|test|train] [--out FILE]
    vaekit summary RUN [RUN ...] [--format markdown|csv|json] [--out FILE]
    vaekit report RUN [--k K]
    vaekit sample RUN [--n 64] [--label K]
    vaekit reconstruct RUN [--n 16]
    vaekit encode RUN [--split test] [--format npy|csv]
    vaekit explore RUN [--host 127.0.0.1] [--port 0|N] [--data-dir DIR]

``python -m vaekit`` is the same program.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="where named datasets' files are found (default: $VAEKIT_DATA_DIR)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the run's, or auto)")


def _weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        default="last",
        choices=["last", "best"],
        help="last: the newest weights (default); best: the epoch with the best validation "
        "ELBO (RUN/best.safetensors)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaekit", description="Variational autoencoders composed from parts."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model (or resume a run)",
        description="Train a model from a config file and/or flags.",
    )
    p.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="FILE_OR_NAME",
        help="a YAML, TOML or JSON config file, or the name of a bundled config (demo, "
        "003_vae, bmnist_iwae_k5, ...; an unknown name lists them) (default: the built-in "
        "defaults)",
    )
    p.add_argument(
        "--resume", default=None, metavar="RUN", help="continue the run in this directory"
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset name (digits, mnist, fashion-mnist, binarized-mnist, mnist-10k) or a path",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        metavar="N",
        help="early stopping: end after N epochs without a better validation score "
        "(train.patience; 0 = off)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads (train.threads; 0 = torch's default); may change on --resume",
    )
    p.add_argument(
        "--out", "-o", default=None, help="run directory to write (default: runs/<config name>)"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set model.latent_dim=2 (repeatable)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when the terminal is interactive)",
    )
    _common(p)

    p = sub.add_parser(
        "evaluate",
        help="importance-sampled NLL, ELBO, bits/dim, active units, ... as JSON",
        description="Evaluate a run: k-sample importance-sampled NLL with its standard error, test ELBO with its terms, bits/dim, KL per dimension, active units, latent classifier accuracy.",
    )
    p.add_argument("run")
    p.add_argument(
        "--k",
        type=int,
        default=5000,
        help="importance samples per example (default 5000, the literature's standard)",
    )
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument(
        "--limit", type=int, default=0, help="evaluate only the first N examples (0 = all)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="examples per decoder pass (default: fitted to --max-rows)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="samples x examples per decoder pass (default: fitted to the decoder, at most 2048; bounds memory)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's own, one per physical core)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when the terminal is interactive)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON file to write (default: RUN/eval.json for the whole test split at k = 5000, "
        "else a name with the settings, e.g. RUN/eval-k100.json)",
    )
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "plot",
        help="write the run's figures as PNG",
        description="Write every figure that applies to the run (or those named with --which) as PNG files.",
    )
    p.add_argument("run")
    p.add_argument(
        "--which",
        nargs="+",
        default=None,
        metavar="NAME",
        help="figures to write (default: all that apply): training_curves latent_scatter latent_histograms manifold latent_grid reconstructions samples interpolation traversal class_grid",
    )
    p.add_argument("--out", default=None, help="folder to write into (default: RUN/plots)")
    p.add_argument("--dpi", type=int, default=100)
    _weights(p)
    _common(p)

    p = sub.add_parser("compare", help="two runs side by side (autoencoder versus VAE) as one PNG")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument(
        "--out", default=None, help="PNG file to write (default: RUN_B/compare-<RUN_A name>.png)"
    )
    p.add_argument("--n", type=int, default=2000, help="test examples to scatter")
    _common(p)

    p = sub.add_parser(
        "curves",
        help="learning curves of several runs in one PNG (the bound each trains, by epoch)",
        description="Minus the bound each run trains (the IWAE bound, else the ELBO; nats) on "
        "one split, by epoch, with each run's best epoch marked: where long runs stand.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    p.add_argument("--out", default=None, help="PNG file to write (default: curves-SPLIT.png)")
    p.add_argument("--dpi", type=int, default=100)

    p = sub.add_parser(
        "summary",
        help="one table of many runs: epochs, best epoch, time, saved NLL / ELBO / bits per dim",
        description="A row per run from what training and `vaekit evaluate` saved (it "
        "evaluates nothing): the README's benchmark tables, rebuilt from your runs.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "json"])
    p.add_argument("--out", default=None, help="file to write (default: print)")

    p = sub.add_parser("report", help="one self-contained HTML report of a run (RUN/report.html)")
    p.add_argument("run")
    p.add_argument(
        "--k",
        type=int,
        default=None,
        help="evaluate with k importance samples (default: reuse the run's saved evaluation "
        "with the highest k, else k=100)",
    )
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN/report.html)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the evaluation")
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "sample", help="draw examples from the prior and write them (PNG grid for images)"
    )
    p.add_argument("run")
    p.add_argument("--n", type=int, default=64)
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class to sample (conditional models; default: every class in turn)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        default=None,
        help="output file (.png, .npy or .csv; default: RUN/samples.png or .csv)",
    )
    _weights(p)
    _common(p)

    p = sub.add_parser("reconstruct", help="test examples beside their reconstructions")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument(
        "--out", default=None, help="output file (default: RUN/reconstructions.png or .csv)"
    )
    _weights(p)
    _common(p)

    p = sub.add_parser("encode", help="latent means and variances of a split to .npy or .csv")
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--format", default="npy", choices=["npy", "csv"])
    p.add_argument("--out", default=None, help="output prefix (default: RUN/latents_<split>)")
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "explore",
        help="serve the latent-space explorer in the browser",
        description="Serve a web page to explore a run's latent space: the encoded test set, live decoding, interpolation, traversals, samples, and your own drawings. Prints the address.",
    )
    p.add_argument("run")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; anything else prints a warning)",
    )
    p.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free one)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for decoding (default 1, the fastest for single points; 0 leaves torch's default)",
    )
    _common(p)
    return parser


def _default_out(config: str | None) -> Path:
    stem = Path(config).stem if config else "default"
    base = Path("runs") / stem
    out, i = base, 1
    while out.exists() and any(out.iterdir()):
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def cmd_train(a: argparse.Namespace) -> int:
    from vaekit.config import load_config
    from vaekit.train import fit

    if a.resume:
        if a.out is not None:
            print(
                f"error: --resume continues {a.resume} in place; drop --out (to start a new run "
                f"from its settings: vaekit train --config {Path(a.resume) / 'config.json'} --out DIR)",
                file=sys.stderr,
            )
            return 2
        if a.config or a.overrides or a.dataset or a.seed is not None:
            print(
                "error: --resume continues a run with its own config; only --epochs, "
                "--patience, --threads and --device may change",
                file=sys.stderr,
            )
            return 2
        fit(
            None,
            a.resume,
            resume=True,
            epochs=a.epochs,
            patience=a.patience,
            threads=a.threads,
            device=a.device,
            data_dir=a.data_dir,
            progress=a.progress,
        )
        return 0
    overrides = list(a.overrides)
    if a.dataset:
        overrides.append(f"data.name={a.dataset}")
    if a.epochs is not None:
        overrides.append(f"train.epochs={a.epochs}")
    if a.patience is not None:
        overrides.append(f"train.patience={a.patience}")
    if a.threads is not None:
        overrides.append(f"train.threads={a.threads}")
    if a.seed is not None:
        overrides.append(f"train.seed={a.seed}")
    if a.device:
        overrides.append(f"train.device={a.device}")
    cfg = load_config(a.config, overrides)
    out = Path(a.out) if a.out else _default_out(a.config)
    fit(cfg, out, data_dir=a.data_dir, progress=a.progress)
    return 0


def _run_and_split(a: argparse.Namespace) -> tuple[Any, Any]:
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu", weights=a.weights)
    ds = run.dataset(a.data_dir)
    split = getattr(ds, a.split)
    if split is None:
        raise SystemExit(f"error: dataset {ds.name} has no {a.split} split")
    return run, split


def cmd_evaluate(a: argparse.Namespace) -> int:
    from vaekit.evaluate import eval_file_name, evaluate_run
    from vaekit.rundir import load, write_json

    run = load(a.run, device=a.device or "cpu", weights=a.weights)
    try:
        result = evaluate_run(
            run,
            k=a.k,
            split=a.split,
            data_dir=a.data_dir,
            limit=a.limit,
            batch_size=a.batch_size,
            max_rows=a.max_rows,
            seed=a.seed,
            threads=a.threads,
            progress=a.progress,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = eval_file_name(run, split=a.split, k=a.k, limit=a.limit)
    out = Path(a.out) if a.out else run.dir / name
    write_json(out, result)
    print(json.dumps(result, indent=2))
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from vaekit.plots import run_figures, save_figures
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu", weights=a.weights)
    try:
        figures = run_figures(run, which=a.which, data_dir=a.data_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = save_figures(figures, Path(a.out) if a.out else run.dir / "plots", dpi=a.dpi)
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


def cmd_curves(a: argparse.Namespace) -> int:
    from vaekit.plots import compare_curves
    from vaekit.rundir import read_metrics

    runs: dict[str, list[dict[str, Any]]] = {}
    for run in a.runs:
        path = Path(run)
        rows = read_metrics(path)
        if not rows:
            what = "has no metrics.jsonl rows yet" if path.is_dir() else "is not a run directory"
            print(
                f"error: {run} {what}; pass directories that `vaekit train` wrote", file=sys.stderr
            )
            return 2
        name = path.resolve().name
        runs[name if name not in runs else str(path)] = rows
    try:
        fig = compare_curves(runs, a.split)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out or f"curves-{a.split}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=a.dpi)
    print(f"wrote {out}")
    return 0


def cmd_summary(a: argparse.Namespace) -> int:
    from vaekit.rundir import RunError
    from vaekit.summary import format_rows, summarize

    try:
        text = format_rows(summarize(a.runs), a.format)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.out:
        from vaekit.rundir import atomic_write

        with atomic_write(Path(a.out), "w") as f:
            f.write(text)
        print(f"wrote {a.out}")
    else:
        print(text, end="")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from vaekit.plots import compare_runs, random_subset
    from vaekit.rundir import load

    run_a, run_b = load(a.run_a, device=a.device or "cpu"), load(a.run_b, device=a.device or "cpu")
    test = random_subset(run_b.dataset(a.data_dir).test, a.n)
    try:
        fig = compare_runs(run_a, run_b, test.x, test.y)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else run_b.dir / f"compare-{run_a.dir.name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from vaekit.report import write_report
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu", weights=a.weights)
    try:
        out = write_report(run, k=a.k, out=a.out, data_dir=a.data_dir, threads=a.threads)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _write_table(path: Path, x: Any, header: list[str]) -> None:
    import numpy as np

    np.savetxt(
        path,
        np.asarray(x).reshape(len(x), -1),
        delimiter=",",
        header=",".join(header),
        comments="",
        fmt="%.6g",
    )


def cmd_sample(a: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vaekit.images import image_grid, save_png, to_images
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu", weights=a.weights)
    torch.manual_seed(a.seed)
    labels = None
    if run.num_classes:
        labels = (
            torch.full((a.n,), a.label)
            if a.label is not None
            else torch.arange(a.n) % run.num_classes
        )
    elif a.label is not None:
        print("error: --label needs a conditional model (model.conditional=true)", file=sys.stderr)
        return 2
    x = run.sample(a.n, labels)
    is_image = run.info["data"].get("is_image", False)
    out = Path(a.out) if a.out else run.dir / ("samples.png" if is_image else "samples.csv")
    if out.suffix == ".png":
        if not is_image:
            print("error: this run's data are not images; write .csv or .npy", file=sys.stderr)
            return 2
        ncol = run.num_classes if (run.num_classes and a.label is None) else None
        save_png(
            image_grid(to_images(x, run.data_shape), ncol=ncol),
            out,
            scale=2 if run.data_shape[-1] <= 16 else 1,
        )
    elif out.suffix == ".npy":
        np.save(out, x.cpu().numpy())
    else:
        _write_table(out, x.cpu().numpy(), [f"x{i}" for i in range(int(np.prod(run.data_shape)))])
    print(f"wrote {a.n} samples to {out}")
    return 0


def cmd_reconstruct(a: argparse.Namespace) -> int:
    import numpy as np

    from vaekit.images import image_grid, save_png, to_images

    run, split = _run_and_split(a)
    n = min(a.n, len(split))
    x = split.x[:n].to(run.device)
    y = split.y[:n] if (split.y is not None and run.num_classes) else None
    xr = run.reconstruct(x, y)
    is_image = run.info["data"].get("is_image", False)
    out = (
        Path(a.out)
        if a.out
        else run.dir / ("reconstructions.png" if is_image else "reconstructions.csv")
    )
    if out.suffix == ".png" and is_image:
        # Originals in the odd rows, reconstructions under them.
        ncol = min(n, 16)
        rows = []
        for i in range(0, n, ncol):
            rows += [
                to_images(x[i : i + ncol], run.data_shape),
                to_images(xr[i : i + ncol], run.data_shape),
            ]
        imgs = np.concatenate(
            [
                np.pad(r, [(0, ncol - len(r))] + [(0, 0)] * (r.ndim - 1), constant_values=1.0)
                for r in rows
            ]
        )
        save_png(image_grid(imgs, ncol=ncol), out, scale=2 if run.data_shape[-1] <= 16 else 1)
    else:
        d = int(np.prod(run.data_shape))
        both = np.concatenate(
            [x.cpu().numpy().reshape(n, d), xr.cpu().numpy().reshape(n, d)], axis=1
        )
        _write_table(out, both, [f"x{i}" for i in range(d)] + [f"recon{i}" for i in range(d)])
    print(f"wrote {n} originals and reconstructions to {out}")
    return 0


def cmd_encode(a: argparse.Namespace) -> int:
    import numpy as np
    import torch

    run, split = _run_and_split(a)
    means, variances = [], []
    for i in range(0, len(split), 1000):
        x = split.x[i : i + 1000]
        y = None if (split.y is None or not run.num_classes) else split.y[i : i + 1000]
        q = run.encode(x, y)
        means.append(q.mean.cpu())
        variances.append(q.variance.cpu())
    mean = torch.cat(means).numpy()
    var = torch.cat(variances).numpy()
    prefix = Path(a.out) if a.out else run.dir / f"latents_{a.split}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    labels = split.y.numpy() if split.y is not None else None
    if a.format == "npy":
        files = [
            prefix.with_name(prefix.name + "_mean.npy"),
            prefix.with_name(prefix.name + "_var.npy"),
        ]
        np.save(files[0], mean)
        np.save(files[1], var)
        if labels is not None:
            files.append(prefix.with_name(prefix.name + "_labels.npy"))
            np.save(files[-1], labels)
    else:
        d = mean.shape[1]
        cols = [mean, var] + ([labels[:, None].astype(np.float64)] if labels is not None else [])
        header = (
            [f"mean_{i}" for i in range(d)]
            + [f"var_{i}" for i in range(d)]
            + (["label"] if labels is not None else [])
        )
        files = [prefix.with_suffix(".csv")]
        _write_table(files[0], np.concatenate(cols, axis=1), header)
    print(
        f"encoded {len(mean)} {a.split} examples into {run.latent_dim} dimensions: "
        + ", ".join(map(str, files))
    )
    return 0


def cmd_explore(a: argparse.Namespace) -> int:
    from vaekit.serve import serve

    if not 0 <= a.port <= 65535:
        print("error: --port must be in 0..65535 (0 picks a free port)", file=sys.stderr)
        return 2
    if a.threads < 0:
        print("error: --threads must be >= 0", file=sys.stderr)
        return 2
    try:
        serve(
            a.run, a.host, a.port, data_dir=a.data_dir, device=a.device or "cpu", threads=a.threads
        )
    except OSError as e:
        # Binding fails this way: the port is taken, or the host is not an address here.
        print(f"error: cannot serve on {a.host}:{a.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nexplorer stopped", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "plot": cmd_plot,
    "compare": cmd_compare,
    "curves": cmd_curves,
    "summary": cmd_summary,
    "report": cmd_report,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "encode": cmd_encode,
    "explore": cmd_explore,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.version:
        import vaekit

        print(vaekit.__version__)
        return 0
    if not a.command:
        parser.print_help()
        return 2
    if getattr(a, "data_dir", None):
        os.environ["VAEKIT_DATA_DIR"] = a.data_dir
    from vaekit.errors import VaekitError

    try:
        return COMMANDS[a.command](a)
    except VaekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # The trainer's own interruption has already said how to resume.
        if not str(e):
            print("\ninterrupted", file=sys.stderr)
        return 130
