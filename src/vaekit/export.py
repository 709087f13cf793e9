"""Writing results where a user asks: arrays as .npy or .csv, image grids as PNG or JPEG,
figures in any format matplotlib writes, text; the format chosen by the file's extension.

Every function here checks the path first (:func:`output_file`: never a file or folder a
run directory owns, :func:`vaekit.rundir.check_not_run_file`; never a folder where a file
is meant; an extension it can write) and writes atomically
(:func:`vaekit.rundir.atomic_write`), so that a failure leaves the old file or none. The
command line's ``sample``, ``reconstruct``, ``encode``, ``summary``, ``curves``,
``compare`` and ``traversals`` write through here; in Python::

    run = vaekit.load("runs/demo")
    write_examples("samples.csv", run, run.sample(64))
    write_encoding("latents/test", run.encode_split("test"), "npy")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.errors import UsageError
from vaekit.images import display_scale, image_grid, reconstruction_grid, save_image, to_images
from vaekit.rundir import Run, RunError, atomic_write, check_not_run_file, weights_fallback

__all__ = [
    "EXAMPLE_FORMATS",
    "ENCODING_FILES",
    "output_file",
    "examples_file",
    "encoding_prefix",
    "check_finite",
    "columns",
    "write_array",
    "write_text",
    "save_figure",
    "write_examples",
    "write_reconstructions",
    "write_encoding",
    "write_codes_dataset",
]

PathLike = str | os.PathLike[str]

# What write_examples and write_reconstructions write, by the file's extension.
EXAMPLE_FORMATS = {".png": "image", ".jpg": "image", ".jpeg": "image", ".npy": "npy", ".csv": "csv"}

# The .npy files write_encoding may write beside a prefix, one per key of an encoding.
ENCODING_FILES = ("mean", "var", "codes", "labels")


def output_file(
    path: PathLike,
    example: str,
    suffixes: Sequence[str] | None = None,
    what: str = "it",
    *,
    option: str = "path",
) -> Path:
    """``path`` as a file to write: not a file or folder of a run directory's own, not a
    folder (``example`` names a file to suggest), and, given ``suffixes``, with one of
    those extensions: the extension picks the format. ``option`` names the path in the
    messages (``--out`` on the command line)."""
    out = check_not_run_file(path, option, example)
    if out.is_dir():
        raise UsageError(f"{option} {path} is a folder; name a file in it, e.g. {out / example}")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise UsageError(
            f"{option} {path}: unknown extension {out.suffix or '(none)'}; {what} can be "
            f"written as {', '.join(suffixes)} (the extension chooses the format)"
        )
    return out


def examples_file(
    path: PathLike | None, run: Run, name: str, *, option: str = "path"
) -> tuple[Path, str]:
    """Where examples of ``run``'s data go (``path``, else ``RUN/NAME.png`` for images and
    ``RUN/NAME.csv`` for other data) and the format its extension picks: image, npy or csv."""
    is_image = bool(run.info["data"].get("is_image", False))
    if path is None:
        out = run.dir / (name + (".png" if is_image else ".csv"))
    else:
        out = output_file(path, f"{name}.png", list(EXAMPLE_FORMATS), name, option=option)
    kind = EXAMPLE_FORMATS[out.suffix.lower()]
    if kind == "image" and not is_image:
        raise UsageError(f"this run's data are not images; write {name} as .npy or .csv")
    return out, kind


def encoding_prefix(
    path: PathLike, fmt: str | None = None, *, option: str = "path", fmt_option: str = "fmt"
) -> tuple[Path, str]:
    """The prefix :func:`write_encoding` writes to and its format: ``path`` may end in
    .npy or .csv, which then chooses the format (``fmt`` must agree; default npy). Every
    file it may write is checked before any is written."""
    given = Path(path)
    if given.is_dir():
        raise UsageError(
            f"{option} {path} is a folder; give a file prefix in it, e.g. {given / 'latents'}"
        )
    suffix = given.suffix.lower()
    if suffix not in ("", ".npy", ".csv"):
        raise UsageError(
            f"{option} {path}: unknown extension {given.suffix}; give a prefix without one "
            "(PREFIX_mean.npy, ... or PREFIX.csv are written), or end it in .npy or .csv"
        )
    chosen = suffix[1:] or fmt or "npy"
    if fmt and fmt != chosen:
        raise UsageError(f"{option} {path} is a .{chosen} file but {fmt_option} is {fmt}")
    prefix = given.with_suffix("")
    for file in _encoding_paths(prefix, chosen, ENCODING_FILES):
        check_not_run_file(file, option, "latents")
    return prefix, chosen


def _encoding_paths(prefix: Path, fmt: str, keys: Sequence[str]) -> list[Path]:
    if fmt == "csv":
        return [prefix.with_name(prefix.name + ".csv")]
    return [prefix.with_name(f"{prefix.name}_{key}.npy") for key in keys]


def check_finite(run: Run, values: Any, what: str) -> None:
    """Stop before writing ``what`` when it holds NaN or infinite values: the weights are
    damaged (or the model diverged), which the file would hide."""
    if bool(torch.isfinite(torch.as_tensor(values)).all()):
        return
    path = run.weights_file
    weights = f"the weights in {path}" if path is not None else "the run's weights"
    instead = f"; {weights_fallback(run.dir, path)}" if path is not None else ""
    raise RunError(
        f"the {what} hold NaN or infinite values, so nothing was written: {weights} are "
        f"damaged, or the model diverged{instead}"
    )


def columns(run: Run) -> tuple[list[str], bool]:
    """The data's own column names (a CSV's header) and True, else x0, x1, ... and False."""
    d = int(np.prod(run.data_shape))
    named = run.info["data"].get("columns")
    if isinstance(named, list) and len(named) == d:
        return [str(c) for c in named], True
    return [f"x{i}" for i in range(d)], False


def write_array(path: PathLike, x: Any, fmt: str, header: Sequence[str] = ()) -> Path:
    """An array as .npy (``fmt`` npy: its shape kept) or .csv (a row per example under
    ``header``, 6 significant digits)."""
    out = check_not_run_file(path, "path", None)
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    with atomic_write(out, "wb") as f:
        if fmt == "npy":
            np.save(f, a)
        elif fmt == "csv":
            np.savetxt(
                f,
                a.reshape(len(a), -1),
                delimiter=",",
                header=",".join(header),
                comments="",
                fmt="%.6g",
            )
        else:
            raise UsageError(f"arrays are written as npy or csv, not {fmt!r}")
    return out


def write_text(path: PathLike, text: str, example: str = "results.txt") -> Path:
    """``text`` to a file (UTF-8)."""
    out = output_file(path, example)
    with atomic_write(out, "w") as f:
        f.write(text)
    return out


def save_figure(fig: Any, path: PathLike, dpi: int = 100, *, option: str = "path") -> Path:
    """A matplotlib figure in the format of the extension (png, pdf, svg, ...)."""
    suffixes = [f".{k}" for k in fig.canvas.get_supported_filetypes()]
    out = output_file(path, "figure.png", suffixes, "a figure", option=option)
    with atomic_write(out, "wb") as f:
        fig.savefig(f, dpi=dpi, format=out.suffix[1:].lower())
    return out


def write_examples(
    path: PathLike, run: Run, x: Any, *, kind: str | None = None, ncol: int | None = None
) -> Path:
    """Examples of the run's data (samples): an image grid (``ncol`` a row), ``.npy``
    (shape ``(N, *data shape)``) or ``.csv`` (a row per example under the data's column
    names). ``kind`` (image, npy, csv) is the extension's unless given."""
    out, kind = _checked_kind(path, run, "samples", kind)
    if kind == "image":
        grid = image_grid(to_images(x, run.data_shape), ncol=ncol)
        save_image(grid, out, scale=display_scale(run.data_shape))
    else:
        write_array(out, x, kind, columns(run)[0])
    return out


def write_reconstructions(
    path: PathLike, run: Run, x: Any, xr: Any, *, kind: str | None = None
) -> Path:
    """Examples ``x`` and their reconstructions ``xr``: an image grid (rows of originals
    above their reconstructions, labelled; :func:`vaekit.images.reconstruction_grid`),
    ``.npy`` (shape ``(2, N, *data shape)``: the originals, then the reconstructions) or
    ``.csv`` (a row per example: its values, then ``recon_``-named ones)."""
    out, kind = _checked_kind(path, run, "reconstructions", kind)
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    b = xr.detach().cpu().numpy() if isinstance(xr, torch.Tensor) else np.asarray(xr)
    if kind == "image":
        grid, labels = reconstruction_grid(a, b, run.data_shape)
        save_image(grid, out, scale=display_scale(run.data_shape), row_labels=labels)
    elif kind == "npy":
        write_array(out, np.stack([a, b]), "npy")
    else:
        n, d = len(a), int(np.prod(run.data_shape))
        names, named = columns(run)
        recon = [f"recon_{c}" for c in names] if named else [f"recon{i}" for i in range(d)]
        write_array(
            out, np.concatenate([a.reshape(n, d), b.reshape(n, d)], axis=1), "csv", names + recon
        )
    return out


def _checked_kind(path: PathLike, run: Run, name: str, kind: str | None) -> tuple[Path, str]:
    if kind is None:
        return examples_file(path, run, name)
    return check_not_run_file(path, "path", f"{name}.png"), kind


def write_encoding(
    prefix: PathLike, encoding: Mapping[str, np.ndarray], fmt: str = "npy"
) -> list[Path]:
    """What :meth:`vaekit.rundir.Run.encode_split` returns, beside ``prefix``: npy writes
    ``PREFIX_mean.npy``, ``PREFIX_var.npy`` and, when present, ``PREFIX_codes.npy`` and
    ``PREFIX_labels.npy``; csv writes one ``PREFIX.csv`` (mean_0.., var_0.., label)."""
    base, fmt = encoding_prefix(Path(f"{os.fspath(prefix)}.{fmt}"), fmt)
    files = _encoding_paths(base, fmt, [k for k in ENCODING_FILES if k in encoding])
    if fmt == "npy":
        for key, file in zip([k for k in ENCODING_FILES if k in encoding], files, strict=True):
            write_array(file, encoding[key], "npy")
        return files
    mean, var, labels = encoding["mean"], encoding["var"], encoding.get("labels")
    d = mean.shape[1]
    cols = [mean, var] + ([labels[:, None].astype(np.float64)] if labels is not None else [])
    header = (
        [f"mean_{i}" for i in range(d)]
        + [f"var_{i}" for i in range(d)]
        + (["label"] if labels is not None else [])
    )
    write_array(files[0], np.concatenate(cols, axis=1), "csv", header)
    return files


def write_codes_dataset(
    path: PathLike, run: Run, dataset: Any = None, *, min_sd: float = 0.0
) -> tuple[Path, dict[str, int], list[int]]:
    """Every split of the run's data encoded by q(z|x), written as an .npz dataset that
    vaekit trains on (``data.name=FILE.npz``): arrays ``train``, ``test`` (and ``valid``),
    the means, with their labels ``y_train``, ... and their variances ``var_train``, ...
    (``data.resample: gaussian`` draws each training batch from N(mean, var)). These are
    the features of Kingma et al. 2014's M1+M2: M2 trained on a VAE's codes
    (model.likelihood=gaussian, the codes being real numbers).

    ``min_sd``: keep only the latent units whose means vary across the training split by
    more than this standard deviation (the authors' M1+M2 keeps those above 0.1: the
    others are units the VAE left at its prior, which carry no information about x); the
    kept units' indices are written as ``units``. Returns the file, the examples per
    split and the kept units. ``dataset``: the run's data (default:
    :meth:`vaekit.rundir.Run.dataset`)."""
    out = output_file(path, "codes.npz", [".npz"], "a dataset of codes", option="--out")
    if not min_sd >= 0:
        raise UsageError(f"--min-sd must be >= 0, got {min_sd}")
    ds = dataset if dataset is not None else run.dataset()
    encodings: dict[str, dict[str, np.ndarray]] = {}
    for split in ("train", "valid", "test"):
        if split == "valid" and ds.valid is None:
            continue
        encoding = run.encode_split(split, dataset=ds)
        check_finite(run, encoding["mean"], "latent means")
        check_finite(run, encoding["var"], "latent variances")
        encodings[split] = encoding
    sd = encodings["train"]["mean"].std(axis=0)
    units = np.flatnonzero(sd > min_sd) if min_sd > 0 else np.arange(len(sd))
    if not len(units):
        raise UsageError(
            f"--min-sd {min_sd} keeps none of the {len(sd)} latent units (the largest standard "
            f"deviation of their means over the training split is {float(sd.max()):.3g}); "
            "give a smaller value"
        )
    arrays: dict[str, np.ndarray] = {}
    for split, encoding in encodings.items():
        arrays[split] = encoding["mean"][:, units].astype(np.float32)
        arrays[f"var_{split}"] = encoding["var"][:, units].astype(np.float32)
        if "labels" in encoding:
            arrays[f"y_{split}"] = encoding["labels"]
    arrays["units"] = units.astype(np.int64)
    with atomic_write(out, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return out, {k: len(v["mean"]) for k, v in encodings.items()}, [int(u) for u in units]
