"""Command line: thin subcommands over the library.

    vaekit train --config FILE [--dataset NAME_OR_PATH] [--epochs N] [--out RUN] [--seed S] [--set k=v ...]
    vaekit train --resume RUN [--epochs N]
    vaekit evaluate RUN
    vaekit sample RUN [--n 64] [--label K]
    vaekit reconstruct RUN [--n 16]
    vaekit encode RUN [--split test] [--format npy|csv]

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
    p.add_argument("--data-dir", default=None, help="where named datasets' files are found (default: $VAEKIT_DATA_DIR)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the run's, or auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaekit", description="Variational autoencoders composed from parts.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (or resume a run)", description="Train a model from a config file and/or flags.")
    p.add_argument("--config", "-c", default=None, help="YAML, TOML or JSON config file (see configs/)")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the run in this directory")
    p.add_argument("--dataset", default=None, help="dataset name (digits, mnist, fashion-mnist, binarized-mnist, mnist-10k) or a path")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", "-o", default=None, help="run directory to write (default: runs/<config name>)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting, e.g. --set model.latent_dim=2 (repeatable)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="show a progress bar (default: when the terminal is interactive)")
    _common(p)

    p = sub.add_parser("evaluate", help="test ELBO and its terms as JSON")
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--samples", type=int, default=1, help="Monte Carlo samples of z per example for the ELBO")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--out", default=None, help="JSON file to write (default: RUN/eval.json)")
    _common(p)

    p = sub.add_parser("sample", help="draw examples from the prior and write them (PNG grid for images)")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--label", type=int, default=None, help="class to sample (conditional models; default: every class in turn)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output file (.png, .npy or .csv; default: RUN/samples.png or .csv)")
    _common(p)

    p = sub.add_parser("reconstruct", help="test examples beside their reconstructions")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--out", default=None, help="output file (default: RUN/reconstructions.png or .csv)")
    _common(p)

    p = sub.add_parser("encode", help="latent means and variances of a split to .npy or .csv")
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--format", default="npy", choices=["npy", "csv"])
    p.add_argument("--out", default=None, help="output prefix (default: RUN/latents_<split>)")
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
        if a.config or a.overrides or a.dataset or a.seed is not None:
            print("error: --resume continues a run with its own config; only --epochs may change", file=sys.stderr)
            return 2
        fit(None, a.resume, resume=True, epochs=a.epochs, data_dir=a.data_dir, progress=a.progress)
        return 0
    overrides = list(a.overrides)
    if a.dataset:
        overrides.append(f"data.name={a.dataset}")
    if a.epochs is not None:
        overrides.append(f"train.epochs={a.epochs}")
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

    run = load(a.run, device=a.device or "cpu")
    ds = run.dataset(a.data_dir)
    split = getattr(ds, a.split)
    if split is None:
        raise SystemExit(f"error: dataset {ds.name} has no {a.split} split")
    return run, split


def cmd_evaluate(a: argparse.Namespace) -> int:
    from vaekit.evaluate import elbo_terms
    from vaekit.rundir import write_json

    run, split = _run_and_split(a)
    result = {"run": str(run.dir), "split": a.split} | elbo_terms(run, split, samples=a.samples, batch_size=a.batch_size)
    out = Path(a.out) if a.out else run.dir / "eval.json"
    write_json(out, result)
    print(json.dumps(result, indent=2))
    return 0


def _write_table(path: Path, x: Any, header: list[str]) -> None:
    import numpy as np

    np.savetxt(path, np.asarray(x).reshape(len(x), -1), delimiter=",", header=",".join(header), comments="", fmt="%.6g")


def cmd_sample(a: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vaekit.images import image_grid, save_png, to_images
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu")
    torch.manual_seed(a.seed)
    labels = None
    if run.num_classes:
        labels = torch.full((a.n,), a.label) if a.label is not None else torch.arange(a.n) % run.num_classes
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
        save_png(image_grid(to_images(x, run.data_shape), ncol=ncol), out, scale=2 if run.data_shape[-1] <= 16 else 1)
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
    out = Path(a.out) if a.out else run.dir / ("reconstructions.png" if is_image else "reconstructions.csv")
    if out.suffix == ".png" and is_image:
        # Originals in the odd rows, reconstructions under them.
        ncol = min(n, 16)
        rows = []
        for i in range(0, n, ncol):
            rows += [to_images(x[i : i + ncol], run.data_shape), to_images(xr[i : i + ncol], run.data_shape)]
        imgs = np.concatenate([np.pad(r, [(0, ncol - len(r))] + [(0, 0)] * (r.ndim - 1), constant_values=1.0) for r in rows])
        save_png(image_grid(imgs, ncol=ncol), out, scale=2 if run.data_shape[-1] <= 16 else 1)
    else:
        d = int(np.prod(run.data_shape))
        both = np.concatenate([x.cpu().numpy().reshape(n, d), xr.cpu().numpy().reshape(n, d)], axis=1)
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
        files = [prefix.with_name(prefix.name + "_mean.npy"), prefix.with_name(prefix.name + "_var.npy")]
        np.save(files[0], mean)
        np.save(files[1], var)
        if labels is not None:
            files.append(prefix.with_name(prefix.name + "_labels.npy"))
            np.save(files[-1], labels)
    else:
        d = mean.shape[1]
        cols = [mean, var] + ([labels[:, None].astype(np.float64)] if labels is not None else [])
        header = [f"mean_{i}" for i in range(d)] + [f"var_{i}" for i in range(d)] + (["label"] if labels is not None else [])
        files = [prefix.with_suffix(".csv")]
        _write_table(files[0], np.concatenate(cols, axis=1), header)
    print(f"encoded {len(mean)} {a.split} examples into {run.latent_dim} dimensions: " + ", ".join(map(str, files)))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "encode": cmd_encode,
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
    from vaekit.config import ConfigError
    from vaekit.data import DataError
    from vaekit.rundir import RunError
    from vaekit.train import TrainingError

    try:
        return COMMANDS[a.command](a)
    except (ConfigError, DataError, RunError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
