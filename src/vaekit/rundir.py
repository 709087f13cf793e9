"""The run directory: the one format shared by training, evaluation, plots and the explorer.

Layout::

    RUN/config.json               the resolved config (loadable by ``vaekit train --config``)
    RUN/model.json                what is needed to rebuild the model: data shape, classes, kind
    RUN/model.safetensors         the latest weights
    RUN/best.safetensors          the weights of the best validation ELBO (train.keep_best)
    RUN/metrics.jsonl             one JSON line per epoch
    RUN/checkpoints/epoch-NNNN/   model.safetensors + objective.safetensors + trainer_state.pt
    RUN/eval*.json                `vaekit evaluate`'s results, named by their settings
                                  (:func:`eval_file_name`, :func:`saved_evaluation`)

Everything is written atomically (temporary file, fsync, rename: :mod:`vaekit.storage`,
the layer below this one, whose names this module re-exports), so a crash leaves either
the old file or the new one, never half of one. Weights files record the sha256
of their tensor data (:data:`WEIGHTS_SHA256`), checked with their values on every load
(:func:`read_weights`); JSON is always strict (:func:`json_text`). What a run directory
owns is listed once (:data:`RUN_OWNED`): no command's ``--out`` may name it. Nothing here
imports the trainer: a run's second stage (:mod:`vaekit.stages`) and its post-hoc samplers
(:mod:`vaekit.samplers`) are trained above it, and loaded here.

Who may write at the same time: one trainer. ``vaekit train`` (new run or ``--resume``)
holds ``RUN/.lock`` (:func:`run_lock`, an OS lock the kernel drops when the process
dies, so a killed trainer leaves no lock behind) and a second trainer is refused with
the first one's PID. The trainer's files (config.json, model.json, the weights,
metrics.jsonl, checkpoints/) are written by the trainer only. Every other command
(evaluate, plot, report, sample, reconstruct, encode, explore) reads those files, which
are always whole, and writes only files of its own (eval*.json, plots/, report.html,
...), atomically; so they may run beside training and beside each other, and two that
write the same file leave the one that finished last.

Example:
    >>> run = load("runs/demo")                      # doctest: +SKIP
    >>> q = run.encode(x)                            # doctest: +SKIP
    >>> q.mean.shape                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import re
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit._version import __version__
from vaekit.config import Config, ConfigError, config_from_dict, config_to_dict
from vaekit.data import (
    NAMED,
    PYTHON_DATA,
    DataError,
    Dataset,
    data_change,
    model_view,
    python_dataset,
    training_data,
)
from vaekit.distributions.likelihoods import check_unit_interval, event_value
from vaekit.errors import UsageError
from vaekit.model import NOT_CONDITIONAL, VAE, build_model
from vaekit.moments import encode_part
from vaekit.objectives import ELBO, M2, AutoencoderLoss
from vaekit.parts import PYTHON_PART, ObjectiveAbilities, is_import_path
from vaekit.registry import OBJECTIVES, REGISTRIES
from vaekit.storage import (
    WEIGHTS_SHA256,
    RunBusyError,
    RunError,
    atomic_write,
    finite_or_none,
    json_text,
    load_weights,
    nonfinite_key,
    read_weights,
    read_weights_epoch,
    save_weights,
    write_json,
)
from vaekit.validate import short
from vaekit.zoo_store import ZOO_PREFIX, zoo_run

if TYPE_CHECKING:
    from vaekit.latent_samplers import Sampler

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock (run_lock then locks nothing)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BEST_WEIGHTS",
    "RunError",
    "RunBusyError",
    "LOCK_FILE",
    "run_lock",
    "python_given",
    "resume_hint",
    "resume_option",
    "Run",
    "load",
    "run_data",
    "read_data_info",
    "atomic_write",
    "write_json",
    "json_text",
    "finite_or_none",
    "metrics_line",
    "nonfinite_key",
    "WEIGHTS_SHA256",
    "weights_fallback",
    "save_weights",
    "load_weights",
    "read_weights",
    "init_weights",
    "read_metrics",
    "METRICS_FILE",
    "MetricsLine",
    "metrics_lines",
    "damaged_line_text",
    "STANDARD_K",
    "eval_file_name",
    "result_header",
    "saved_evaluation",
    "objective_abilities",
    "part_labels",
    "model_label",
    "weights_path",
    "read_weights_epoch",
    "checkpoint_dirs",
    "latest_checkpoint",
    "RUN_OWNED",
    "is_run_dir",
    "run_file_owner",
    "check_not_run_file",
    "no_run_dir",
    "READ_ONLY_MARK",
    "read_only_folder",
    "ZOO_PREFIX",
    "zoo_name",
    "run_location",
    "PRIOR_STAGE",
    "STAGES",
    "STAGE_FILE",
    "prior_stage_dir",
    "has_prior_stage",
    "stage_note",
    "prior_note",
    "saved_sampler",
]


LOCK_FILE = ".lock"


@contextmanager
def run_lock(
    run_dir: str | os.PathLike[str], command: str = "vaekit train", create: bool = True
) -> Iterator[Path]:
    """Hold ``RUN/.lock`` exclusively for the block; raise :class:`RunBusyError` at once
    (naming the holder's PID) when another process holds it.

    The lock is ``flock`` on the file, which the kernel releases when its holder exits in
    any way (``kill -9`` included), so a stale ``.lock`` left by a killed process is simply
    taken over. The holder writes its PID, host, command and start time into the file for
    the refusal message, and removes it when done. ``RUN`` (and missing parents) is created
    when missing (else, with ``create=False``, that is a RunError), and removed again on
    exit if still empty (a run that failed to start). Where there is no ``fcntl``
    (Windows) nothing is locked.

    Example:
        >>> with run_lock("runs/demo"):                 # doctest: +SKIP
        ...     train_into("runs/demo")
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    # The folders this creates, innermost first (RUN, and any missing parents such as runs/).
    created = []
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        created.append(folder)
    if created and not create:
        raise no_run_dir(run_dir)
    # The innermost folder that is there must be a folder (not a file named like the run).
    there = run_dir.parents[len(created) - 1] if created else run_dir
    if there.exists() and not there.is_dir():
        raise _not_a_folder(run_dir, there) if create else no_run_dir(run_dir)
    if fcntl is None:  # pragma: no cover - Windows: no flock; run without a lock
        run_dir.mkdir(parents=True, exist_ok=True)
        yield path
        return
    for _ in range(100):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder vanished in between (a failed start removed it)
            continue
        except OSError as e:
            raise RunError(f"cannot lock {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunBusyError(_busy_text(run_dir, holder)) from None
        except OSError as e:
            os.close(fd)
            raise RunError(f"cannot lock {path}: {e.strerror or e}") from None
        # The previous holder may have removed the file between our open and our flock:
        # then we hold a lock on a file no one else can find, so open the path again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise RunError(f"cannot lock {path}: it keeps being removed by another process")
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        yield path
    finally:
        # Removed while still held, so that no one ever locks a file that is gone.
        path.unlink(missing_ok=True)
        os.close(fd)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run started (or someone else wrote there)
                break


def _lock_holder(fd: int) -> dict[str, Any]:
    """What the holder of a lock file wrote into it (empty if it has not written yet)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _busy_text(run_dir: Path, holder: dict[str, Any]) -> str:
    pid = holder.get("pid")
    if pid is None:
        who = "another process"
    else:
        who = f"{holder.get('command') or 'another process'} (PID {pid}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        who += f", since {holder['since']})" if holder.get("since") else ")"
    stop = f"kill -INT {pid}" if pid is not None else "Ctrl-C"
    return (
        f"{run_dir} is being written by {who}; only one process may train a run at a time. "
        f"Wait for it to finish, or stop it ({stop}: it writes a checkpoint) and then "
        f"continue with {resume_hint(run_dir, epochs='')}"
    )


def python_given(config: Config) -> list[str]:
    """What of a run was given as Python objects, which its config.json cannot rebuild:
    ``"model"`` (a part of yours passed as a module to :func:`vaekit.compose`),
    ``"objective"`` (an objective object of an unregistered class) and ``"data"`` (data
    passed to :func:`vaekit.fit`). Empty for a run that ``vaekit train --resume`` continues."""
    m = config.model
    parts = [m.encoder, m.decoder, m.posterior, m.flow, m.prior, m.likelihood]
    given = []
    if any(pc is not None and pc.name.startswith(PYTHON_PART) for pc in parts):
        given.append("model")
    if config.objective.name.startswith(PYTHON_PART):
        given.append("objective")
    if config.data.name == PYTHON_DATA:
        given.append("data")
    return given


def resume_hint(
    run_dir: str | os.PathLike[str],
    config: Config | None = None,
    *,
    epochs: str = "N",
    processes: int = 1,
) -> str:
    """How to continue a run, as it can be continued: ```vaekit train --resume RUN --epochs
    N```, or for a run of data or parts given in Python (which the command line cannot
    rebuild) ```vaekit.fit(model, 'RUN', data=x, resume=True, epochs=N)``` and what to pass
    again. ``config``: the run's (read from RUN/config.json when None); ``epochs=""`` leaves
    the epochs out; ``processes`` > 1: the torchrun command.

    Example:
        >>> from vaekit.config import load_config
        >>> resume_hint("runs/mine", load_config(None, ["data.name=<python>"]))
        "`vaekit.fit(None, 'runs/mine', data=x, resume=True, epochs=N)` (with the same data x)"
    """
    if config is None:
        try:
            config = read_run_config(run_dir)
        except RunError:
            config = None
    given = python_given(config) if config is not None else []
    if not given:
        command = f"vaekit train --resume {run_dir}" + (f" --epochs {epochs}" if epochs else "")
        if processes > 1:
            command = f"torchrun --nproc_per_node={processes} -m {command}"
        return f"`{command}`"
    args = ["model" if "model" in given else "None", repr(str(run_dir))]
    args += [f"{k}={v}" for k, v in (("data", "x"), ("objective", "objective")) if k in given]
    args += ["resume=True"] + ([f"epochs={epochs}"] if epochs else [])
    again = {"model": "model (built the same way)", "data": "data x", "objective": "objective"}
    return (
        f"`vaekit.fit({', '.join(args)})` (with the same {' and '.join(again[k] for k in given)})"
    )


def resume_option(config: Config, name: str, value: str = "N") -> str:
    """A setting of :func:`resume_hint`'s command: ``--epochs N``, or ``epochs=N`` for a run
    that is continued in Python."""
    return f"{name}={value}" if python_given(config) else f"--{name} {value}"


def weights_path(run_dir: Path, weights: str = "last") -> Path:
    """The weights file that ``load(run_dir, weights=...)`` reads: ``best.safetensors``, or
    ``model.safetensors`` (else the newest checkpoint's); a RunError says what is missing."""
    if weights == "best":
        path = run_dir / BEST_WEIGHTS
        if not path.is_file():
            raise RunError(
                f"{run_dir}: no {BEST_WEIGHTS}; it is kept when the data has a validation "
                "split (a dataset with one, or data.valid_fraction > 0) and train.keep_best "
                "is true; use the last weights instead (weights='last', --weights last)"
            )
        return path
    if weights == "last":
        path = run_dir / "model.safetensors"
        if not path.is_file():
            ckpt = latest_checkpoint(run_dir)
            if ckpt is None:
                raise RunError(
                    f"{run_dir}: no weights yet (model.safetensors is missing); train it first"
                )
            # With train.ema the run's weights are the average the checkpoint keeps.
            ema = ckpt / "ema.safetensors"
            path = ema if ema.is_file() else ckpt / "model.safetensors"
        return path
    raise RunError(f"weights must be 'last' or 'best', got {weights!r}")


def weights_fallback(run_dir: Path, path: Path) -> str:
    """What to load instead of the damaged weights file ``path`` of ``run_dir``: the other
    weights (``--weights best`` / ``last``) or a checkpoint's, whichever the run has."""
    ways = []
    best = run_dir / BEST_WEIGHTS
    if path.name == BEST_WEIGHTS:
        ways.append("load the last weights instead (--weights last; Python: weights='last')")
    elif best.is_file():
        ways.append("load the best weights instead (--weights best; Python: weights='best')")
    # (With train.ema a checkpoint's run weights are its moving average.)
    ckpts = [
        c / ("ema.safetensors" if (c / "ema.safetensors").is_file() else "model.safetensors")
        for c in checkpoint_dirs(run_dir)
    ]
    ckpts = [c for c in ckpts if c.is_file() and c != path]
    if ckpts:
        ways.append(f"copy a checkpoint's weights over it (the newest: {ckpts[-1]})")
    if not ways:
        return "train the run again (vaekit train --config RUN/config.json --out NEW)".replace(
            "RUN", str(run_dir)
        )
    return " or ".join(ways)


def init_weights(module: torch.nn.Module, source: str | os.PathLike[str]) -> list[str]:
    """Load another run's weights into ``module`` where names and shapes match (the
    ``train.init`` of a run that starts from another, as a second stage does).

    ``source`` is a run directory (its last weights) or a ``.safetensors`` file. Returns the
    names of the module's tensors that it did not hold (they keep their initialisation);
    a tensor of another shape, or a file that matches nothing, is a RunError.
    """
    path = Path(source)
    if path.is_dir():
        path = weights_path(path, "last")
    elif not path.is_file():
        raise RunError(
            f"train.init={source}: no such run directory or weights file; give the directory "
            "that `vaekit train --out` wrote"
        )
    try:
        saved = read_weights(path)
    except RunError as e:
        raise RunError(f"train.init: {e}") from None
    own = module.state_dict()
    wrong = [k for k in own if k in saved and saved[k].shape != own[k].shape]
    if wrong:
        raise RunError(
            f"train.init: {path} holds {wrong[0]} of shape {tuple(saved[wrong[0]].shape)}, "
            f"this model needs {tuple(own[wrong[0]].shape)}: it is not the same model"
        )
    found = {k: v for k, v in saved.items() if k in own}
    if not found:
        raise RunError(f"train.init: {path} holds none of this model's weights")
    module.load_state_dict(found, strict=False)
    return [k for k in own if k not in found]


def part_labels(config: Config) -> dict[str, str]:
    """Each part's short label, as its class gives it: for summaries, reports and plots.

    Example:
        >>> from vaekit.config import load_config
        >>> labels = part_labels(load_config(None, ["model.flow=planar", "objective.name=iwae"]))
        >>> labels["posterior"], labels["objective"]
        ('gaussian+planar4', 'iwae k=1')
    """
    m = config.model

    def label(kind: str, pc: Any) -> str:
        return str(REGISTRIES[kind].get(pc.name).label(pc.options))

    posterior = label("posterior", m.posterior)
    if m.flow is not None:
        posterior += "+" + label("flow", m.flow)
    out = {
        "encoder": label("network", m.encoder),
        "posterior": posterior,
        "prior": label("prior", m.prior),
        "likelihood": label("likelihood", m.likelihood),
        "objective": label("objective", config.objective),
    }
    if m.decoder is not None:
        out["decoder"] = label("network", m.decoder)
    return out


def model_label(config: Config) -> str:
    """The model in one line: networks, latent size, posterior, prior, likelihood.

    Example:
        >>> from vaekit.config import load_config
        >>> model_label(load_config(None, ["model.prior=mog"]))
        'mlp 512, z=2, gaussian, mog10 prior, bernoulli'
    """
    labels = part_labels(config)
    return (
        f"{labels['encoder']}, z={config.model.latent_dim}, {labels['posterior']}, "
        f"{labels['prior']} prior, {labels['likelihood']}"
    )


def objective_abilities(config: Config) -> ObjectiveAbilities:
    """What a run's objective reports: the bound it trains, which the best epoch maximises.

    Example:
        >>> from vaekit.config import load_config
        >>> objective_abilities(load_config(None, ["objective.name=iwae"])).bound
        'iwae'
    """
    abilities: ObjectiveAbilities = OBJECTIVES.get(config.objective.name).abilities
    return abilities


METRICS_FILE = "metrics.jsonl"
_EPOCH_PREFIX = re.compile(r'\s*\{\s*"epoch"\s*:\s*(\d+)')


@dataclass
class MetricsLine:
    """One line of ``metrics.jsonl`` as written (``text``, without its newline), its
    number (from 1), the row it holds (None when the line is damaged) and its epoch (for
    a damaged line: read from its start, else the epoch after the line before it)."""

    number: int
    text: str
    row: dict[str, Any] | None
    epoch: int


def metrics_lines(run_dir: Path) -> tuple[list[MetricsLine], bool]:
    """Every non-blank line of a run's ``metrics.jsonl``, damaged ones included, and
    whether the file ends in a newline (False: its last line was cut short, or is still
    being written). No file: no lines."""
    path = Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return [], True
    lines: list[MetricsLine] = []
    previous = 0
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("epoch"), int)):
            row = None
        if row is not None:
            epoch = int(row["epoch"])
        else:
            m = _EPOCH_PREFIX.match(raw)
            epoch = int(m[1]) if m else previous + 1
        lines.append(MetricsLine(number, raw, row, epoch))
        previous = epoch
    return lines, text == "" or text.endswith("\n")


def metrics_line(row: Mapping[str, Any]) -> str:
    """One epoch's line of ``metrics.jsonl`` (with its newline): strict JSON, in which a
    figure that was NaN or infinite is null (:func:`read_metrics` reads it back as NaN)."""
    return json.dumps(finite_or_none(row), allow_nan=False) + "\n"


def _nan_for_null(data: Any) -> Any:
    if data is None:
        return math.nan
    if isinstance(data, dict):
        return {k: _nan_for_null(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_nan_for_null(v) for v in data]
    return data


# Damaged lines already reported by this process (file, line, text): said once, not at
# every read of the same run.
_REPORTED: set[tuple[str, int, str]] = set()


def damaged_line_text(path: Path, line: MetricsLine) -> str:
    """What is wrong with a damaged metrics line, for a warning."""
    epoch = f" (epoch {line.epoch})" if line.epoch is not None else ""
    return (
        f"{path} line {line.number}{epoch} is damaged (not a whole JSON record: {line.text[:60]!r})"
    )


def read_metrics(run_dir: Path, *, warn: bool = True) -> list[dict[str, Any]]:
    """The per-epoch metrics of a run (an empty list when it has none yet).

    Every intact line is read; a damaged one (cut short by a crash, or edited) is skipped
    with a warning on stderr that names the file and the line (once per process), never
    silently, and never at the cost of the lines after it.
    """
    lines, _ = metrics_lines(run_dir)
    if warn:
        path = Path(run_dir) / METRICS_FILE
        for line in lines:
            key = (str(path.resolve()), line.number, line.text)
            if line.row is None and key not in _REPORTED:
                _REPORTED.add(key)
                print(
                    f"warning: {damaged_line_text(path, line)}; it is skipped, the other lines "
                    "are read",
                    file=sys.stderr,
                )
    # A null is a figure that was not finite (metrics_line); older files hold NaN itself.
    return [_nan_for_null(line.row) for line in lines if line.row is not None]


# The literature's importance-sample count for test NLL; its evaluation is RUN/eval.json.
STANDARD_K = 5000


def eval_file_name(run: Run, *, split: str = "test", k: int = STANDARD_K, limit: int = 0) -> str:
    """Where an evaluation is saved, named by what it is, so that a quick check never
    replaces a long evaluation.

    The standard one, the whole test split at k = 5000, is ``eval.json`` (``eval-best.json``
    for the best weights); any other setting adds itself to the name.

    Example:
        >>> class R:  # a loaded run of its last weights
        ...     weights = "last"
        >>> eval_file_name(R()), eval_file_name(R(), k=100), eval_file_name(R(), split="valid", limit=500)
        ('eval.json', 'eval-k100.json', 'eval-valid-n500.json')
    """
    return result_file_name("eval", run, split, limit, *([f"k{k}"] if k != STANDARD_K else []))


def result_header(run: Run, dataset: str, split: str, n: int) -> dict[str, Any]:
    """The keys every result file of a run begins with (evaluation, disentanglement): the
    run, which weights (``last`` or ``best``) of which epoch, the data and how many
    examples, and the latent size."""
    return {
        "run": str(run.dir),
        "weights": getattr(run, "weights", "last"),
        "epoch": getattr(run, "weights_epoch", None),
        "dataset": dataset,
        "split": split,
        "n": n,
        "latent_dim": run.latent_dim,
    }


def result_file_name(stem: str, run: Run, split: str, limit: int, *settings: str) -> str:
    """``STEM[-best][-SPLIT][-nN][-SETTING...].json``: a result of ``run`` named by what it
    is (its weights, split and example count, then the caller's own settings), so that a
    quick check never replaces a thorough one.

    >>> class R:
    ...     weights = "best"
    >>> result_file_name("eval", R(), "valid", 500, "k100")
    'eval-best-valid-n500-k100.json'
    """
    parts = [stem]
    if getattr(run, "weights", "last") == "best":
        parts.append("best")
    if split != "test":
        parts.append(split)
    if limit:
        parts.append(f"n{limit}")
    return "-".join([*parts, *settings]) + ".json"


def saved_evaluation(
    run_dir: str | os.PathLike[str], weights: str = "last", epoch: int | None = None
) -> dict[str, Any] | None:
    """The most thorough saved evaluation (highest k) of the whole test split for the
    given weights ("last" or "best") of the given epoch, or None when there is none;
    files of other weights, of another epoch, of part of the split or of another split
    are ignored. For a loaded run: ``saved_evaluation(run.dir, run.weights, run.weights_epoch)``."""
    prefix = "eval-best" if weights == "best" else "eval"
    pattern = re.compile(re.escape(prefix) + r"(?:-k\d+)?\.json")
    found: dict[str, Any] | None = None
    for path in sorted(Path(run_dir).glob(prefix + "*.json")):
        if not pattern.fullmatch(path.name):
            continue
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not (
            isinstance(saved, dict)
            and isinstance(saved.get("k"), int)
            and "nll" in saved
            and saved.get("split") == "test"
            and saved.get("weights", "last") == weights
            and saved.get("epoch") == epoch
        ):
            continue
        if found is None or saved["k"] > found["k"]:
            found = saved
    return found


BEST_WEIGHTS = "best.safetensors"
# Everything a run directory owns, by name, with what it holds: the trainer's files, the
# folders of its checkpoints, of its second stage (vaekit.stages), of its fitted samplers
# (vaekit.samplers) and of its trackers' logs. Commands write their results beside these
# (eval*.json, plots/, report.html, ...), never over them: :func:`check_not_run_file`.
RUN_OWNED: dict[str, str] = {
    "config.json": "the resolved config",
    "model.json": "the data shape, classes and fingerprint",
    "model.safetensors": "the latest weights",
    BEST_WEIGHTS: "the best weights",
    METRICS_FILE: "the training history",
    LOCK_FILE: "the trainer's lock",
    "checkpoints": "the checkpoints",
    "prior": "the second stage",
    "samplers": "the fitted samplers",
    "tensorboard": "the TensorBoard log",
    "mlruns": "the MLflow log",
    "mlflow_run_id": "the MLflow run id",
}


def is_run_dir(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a run: its config.json with model.json, metrics.jsonl or
    checkpoints/ beside it."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any(
        (folder / name).exists() for name in ("model.json", METRICS_FILE, "checkpoints")
    )


def run_file_owner(path: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """The run directory that owns ``path`` and the entry of :data:`RUN_OWNED` it is or lies
    in, or None. Symbolic links and ``..`` are resolved first; the nearest run directory
    above the path decides (``RUN/prior`` is a run of its own, whose plots/ are free)."""
    p = Path(path).expanduser()
    try:
        p = p.resolve()
    except (OSError, RuntimeError):  # a loop of links: judge the path as written
        p = p.absolute()
    for folder in p.parents:
        if is_run_dir(folder):
            entry = p.relative_to(folder).parts[0]
            return (folder, entry) if entry in RUN_OWNED else None
    return None


# A folder holding this file is read-only to every command (the model zoo, vaekit.zoo):
# no --out may name it or anything in it, and a run in it is loaded from its copy in the
# cache (run_location), where its outputs go. The file's text says why.
READ_ONLY_MARK = ".vaekit-read-only"


def read_only_folder(path: str | os.PathLike[str]) -> Path | None:
    """The folder marked read-only (:data:`READ_ONLY_MARK`) that is or holds ``path``
    (links and ``..`` resolved), or None."""
    resolved = Path(path).expanduser().absolute()
    with contextlib.suppress(OSError, RuntimeError):
        resolved = resolved.resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / READ_ONLY_MARK).is_file():
            return folder
    return None


def check_not_run_file(
    path: str | os.PathLike[str], option: str = "--out", example: str | None = "results.json"
) -> Path:
    """``path`` as a Path, unless it names a file or folder that a run directory owns
    (:data:`RUN_OWNED`), or lies in one: writing there would break the run, so that is a
    RunError (suggesting ``example`` in the run directory instead). Every command that
    writes where its user says checks here first, before it writes anything. A folder
    marked read-only (:data:`READ_ONLY_MARK`, the model zoo) is refused whole."""
    folder = read_only_folder(path)
    if folder is not None:
        why = "vaekit never writes there"
        with contextlib.suppress(OSError):
            why = (folder / READ_ONLY_MARK).read_text().strip()
        raise RunError(f"{option} {path} lies in {folder}, which is read-only: {why}")
    owner = run_file_owner(path)
    if owner is not None:
        run_dir, entry = owner
        target = run_dir / entry
        where = "is" if Path(path).expanduser().resolve() == target else "lies in"
        instead = f", e.g. {run_dir / example}" if example else ""
        raise RunError(
            f"{option} {path} {where} {target}, {RUN_OWNED[entry]} of the run {run_dir}; "
            f"vaekit never writes over a run's own files. Choose another name{instead}"
        )
    return Path(path)


_CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)(?:-batch-(\d+))?$")


def checkpoint_dirs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """A run's checkpoint directories, oldest first.

    ``epoch-NNNN`` holds the state after NNNN epochs; ``epoch-NNNN-batch-BBBBBB`` the
    state BBBBBB batches into the next epoch (written when training is interrupted).
    Temporary folders of a checkpoint still being written start with a dot and are
    never listed.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _CHECKPOINT_NAME.match(p.name)
        if m and p.is_dir():
            found.append(((int(m[1]), int(m[2] or 0)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    ckpts = checkpoint_dirs(run_dir)
    return ckpts[-1] if ckpts else None


# -- a second stage (RUN/prior), as loading finds it; vaekit.stages trains it ------------

# RUN/prior: the second stage's run directory.
PRIOR_STAGE = "prior"
# The stages a run directory may hold: the model as trained, and a prior fitted after it.
STAGES = ("model", PRIOR_STAGE)
STAGE_FILE = "stage.json"


def prior_stage_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Where a run's second stage lives: ``RUN/prior``."""
    return Path(run_dir) / PRIOR_STAGE


def has_prior_stage(run_dir: str | os.PathLike[str]) -> bool:
    """Whether RUN has a second stage with weights (what ``vaekit.load(RUN)`` then loads).

    Its best weights alone count: a zoo model ships only the weights that gave its figure."""
    stage = prior_stage_dir(run_dir)
    return (stage / "config.json").is_file() and (
        (stage / "model.safetensors").is_file()
        or (stage / BEST_WEIGHTS).is_file()
        or latest_checkpoint(stage) is not None
    )


def stage_note(run_dir: str | os.PathLike[str]) -> str | None:
    """Why RUN's second stage may no longer fit RUN (RUN trained on after it started)."""
    stage = prior_stage_dir(run_dir)
    try:
        info = json.loads((stage / STAGE_FILE).read_text())
        now = read_weights_epoch(weights_path(Path(run_dir), "last"))
    except (OSError, ValueError, RunError):
        return None
    then = info.get("parent_epoch") if isinstance(info, dict) else None
    if then is None or now is None or now == then:
        return None
    return (
        f"{stage} was fitted to the codes of {run_dir} at epoch {then}, which has trained to "
        f"epoch {now} since; its model is that of epoch {then}. Remove {stage} and run "
        f"`vaekit train --resume {run_dir} --stage prior` again to fit the new codes"
    )


def prior_note(run: Run) -> str | None:
    """A note for outputs of a discrete model whose prior learned nothing: its samples and
    bound use the uniform prior over codes (the honest default before a prior stage)."""
    model = run.model
    if not model.composition.posterior.discrete or getattr(run, "stage", "model") != "model":
        return None
    if any(True for _ in model.prior_module.parameters()):
        return None
    return (
        f"{run.dir} has no learned prior over its codes: it uses the uniform prior (log p(z) = "
        "-positions x log codes). Fit one to its codes with "
        f"`vaekit train --resume {run.dir} --stage prior --epochs N`"
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(
            f"{path.parent} is not a vaekit run directory: {path.name} is missing ({what})"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return data


def _not_a_folder(run_dir: Path, file: Path) -> RunError:
    """A file where a run directory (or a folder above it) should be."""
    where = f"{file} is a file" if file == run_dir else f"{file}, above it, is a file"
    return RunError(
        f"cannot use {run_dir} as a run directory: {where}, not a folder. Give a new folder "
        "(or a run to continue with --resume) instead; vaekit does not write over that file"
    )


def no_run_dir(run_dir: str | os.PathLike[str], python: bool = False) -> RunError:
    """There is no run directory at ``run_dir`` (nothing, or a file): the error, with how to
    make one from where the caller is (``python``: :func:`vaekit.fit`, else the command line)."""
    make = "vaekit.fit" if python else "`vaekit train --out`"
    if Path(run_dir).exists():
        return RunError(
            f"{str(run_dir)!r} is a file, not a run directory; give the folder that {make} wrote"
        )
    how = (
        f"`vaekit.fit(config_or_model, {str(run_dir)!r})` (without resume=True)"
        if python
        else f"`vaekit train --out {run_dir}`"
    )
    return RunError(f"run directory {str(run_dir)!r} does not exist; train one with {how}")


def read_run_config(run_dir: str | os.PathLike[str]) -> Config:
    """The resolved config a run directory was trained with (``RUN/config.json``).

    Every reader of a run goes through here (loading, resuming, summaries), so a missing,
    corrupt or invalid file gets the same :class:`RunError`.
    """
    if Path(run_dir).is_file():
        raise RunError(
            f"{str(run_dir)!r} is a file, not a run directory; pass the directory that "
            "`vaekit train --out RUN` wrote (it holds config.json and model.json)"
        )
    if not Path(run_dir).is_dir():
        raise no_run_dir(run_dir)
    path = Path(run_dir) / "config.json"
    try:
        return config_from_dict(_read_json(path, "the resolved config"))
    except ConfigError as e:
        raise RunError(f"{path}: {e}") from None


def _device(name: str | torch.device) -> torch.device:
    """A device to load a run onto, that this machine has (a UsageError otherwise, where
    torch would raise a RuntimeError or an AssertionError)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device must be cpu, cuda, cuda:N or mps; got {short(name)}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            there = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise UsageError(f"device {str(device)!r}: this machine has {there}; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps': this machine has no MPS device; use cpu")
    return device


def _user_tensor(value: Any, what: str) -> Tensor:
    """What a user passed as ``what`` (an array, a tensor, nested lists) as a tensor of
    numbers; anything else is a DataError."""
    if isinstance(value, Tensor):
        return value
    try:
        t = torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise DataError(
            f"{what} must be numbers (a numpy array, a tensor or nested lists), got "
            f"{type(value).__name__} {short(value)}"
        ) from None
    return t


def _check_finite(t: Tensor, what: str, row: str) -> None:
    """A DataError naming how many values of ``t`` are NaN or infinite and the first
    ``row`` (example, code) that holds one: a model would return NaN for it silently."""
    if not t.is_floating_point():
        return
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return
    first = int(bad.reshape(len(t), -1).any(1).nonzero()[0]) if t.dim() > 1 else 0
    raise DataError(
        f"{what} holds {int(bad.sum())} NaN or infinite values (first in {row} {first}, "
        "counting from 0); the model would give NaN for them: clean or impute them first"
    )


def _as_tensor(x: Any, device: torch.device) -> Tensor:
    t = _user_tensor(x, "z")
    if not t.dtype.is_floating_point:
        t = t.float()
    return t.to(device=device, dtype=torch.float32)


class Run:
    """A trained model loaded from its run directory, with the tutorials' three views.

    - the VAE itself: :meth:`elbo`, :meth:`reconstruct`;
    - the encoder: :meth:`encode` (the posterior) and :meth:`transform` (its mean);
    - the generator: :meth:`decode` and :meth:`generate` / :meth:`sample`.

    Inputs may be numpy arrays or tensors, flat ``(N, D)`` or shaped ``(N, *shape)``.
    """

    def __init__(self, run_dir: Path, config: Config, info: dict[str, Any], model: VAE) -> None:
        self.dir = Path(run_dir)
        self.config = config
        self.info = info
        self.model = model.eval()
        # Which weights were loaded ("last" or "best") and the epoch that wrote them.
        self.weights = "last"
        self.weights_epoch: int | None = None
        # The file those weights came from (None for a model not loaded from a file).
        self.weights_file: Path | None = None
        # "model", or "prior" for a second stage (RUN/prior) loaded as its parent RUN.
        self.stage = "model"
        self.parent: Path | None = None
        # Something to tell whoever reads outputs of this run (a stale second stage).
        self.note: str | None = None
        # "zoo:NAME" for a model of the zoo (vaekit.zoo), loaded from its checked copy in
        # the cache (self.dir), where its outputs go; None for a run directory.
        self.zoo: str | None = None

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_dir(
        cls,
        run_dir: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        weights: str = "last",
        model: VAE | None = None,
        stage: str = "auto",
    ) -> Run:
        zoo = zoo_name(run_dir)
        run_dir, weights = run_location(run_dir, weights, stage)
        device = _device(device)
        if stage not in ("auto", *STAGES):
            raise RunError(f"stage must be auto, {' or '.join(STAGES)}; got {stage!r}")
        if stage == "prior" or (stage == "auto" and has_prior_stage(run_dir)):
            if not has_prior_stage(run_dir):
                raise RunError(
                    f"{run_dir} has no prior stage yet: train one with "
                    f"`vaekit train --resume {run_dir} --stage prior --epochs N`"
                )
            run = cls.from_dir(prior_stage_dir(run_dir), device, weights, model, stage="model")
            run.stage, run.parent, run.note = "prior", run_dir, stage_note(run_dir)
            run.zoo = None if zoo is None else ZOO_PREFIX + zoo[0]
            return run
        config = read_run_config(run_dir)
        info = _read_json(run_dir / "model.json", "data shape and classes")
        data = info.get("data")
        if not (
            isinstance(data, dict)
            and isinstance(data.get("shape"), list)
            and all(isinstance(d, int) and d > 0 for d in data["shape"])
            and isinstance(data.get("num_classes"), int)
        ):
            raise RunError(
                f"{run_dir / 'model.json'}: no valid data.shape and data.num_classes; the file "
                "was edited or is corrupt (`vaekit train` writes it)"
            )
        if model is None:
            model = build_model(config.model, data["shape"], data["num_classes"])
        elif tuple(model.data_shape) != tuple(data["shape"]):
            raise RunError(
                f"the model given is built for examples of shape {tuple(model.data_shape)}, but "
                f"{run_dir} was trained on {tuple(data['shape'])}"
            )
        path = weights_path(run_dir, weights)
        load_weights(path, model, weights_fallback(run_dir, path))
        run = cls(run_dir, config, info, model.to(device))
        run.weights, run.weights_epoch = weights, read_weights_epoch(path)
        run.weights_file = path
        run.zoo = None if zoo is None else ZOO_PREFIX + zoo[0]
        return run

    def __repr__(self) -> str:
        data = self.info.get("data", {})
        epoch = f", epoch {self.weights_epoch}" if self.weights_epoch is not None else ""
        classes = (
            f", conditional on {self.num_classes} classes"
            if self.num_classes
            else f", {data.get('num_classes')} classes (not conditional)"
            if data.get("num_classes")
            else ""
        )
        stage = f" (the prior stage of {str(self.parent)!r})" if self.parent is not None else ""
        return (
            f"<vaekit.Run {str(self.dir)!r}{stage}: {model_label(self.config)}; "
            f"{self.objective_label}; {self.weights} weights{epoch}; "
            f"data {data.get('name')} {tuple(self.data_shape)} {data.get('kind', '')}{classes}; "
            f"on {self.device}>"
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def prior(self) -> Distribution:
        """p(z)."""
        return self.model.prior

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.model.data_shape

    @property
    def num_classes(self) -> int:
        """Number of classes of a conditional model (0 when it is not conditional)."""
        return self.model.num_classes

    @property
    def objective_label(self) -> str:
        """The objective the run was trained with, as its part labels it ("iwae k=5 dreg")."""
        return part_labels(self.config)["objective"]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir)

    def _x(self, x: Any) -> Tensor:
        """Examples ``(N, *data_shape)`` on the run's device from what a user holds: flat or
        shaped (the rule of the likelihoods' ``log_prob``), one example or many. No examples,
        NaN or infinite values, and values outside [0, 1] for a model trained on [0, 1] data
        are refused (the trainer and the command line refuse them too)."""
        t = _user_tensor(x, "x")
        t = event_value(t if t.is_floating_point() else t.float(), torch.Size(self.data_shape))
        k = len(self.data_shape)
        if t.dim() == k:
            t = t.unsqueeze(0)
        elif t.dim() != k + 1:
            raise DataError(
                f"x of shape {tuple(t.shape)}: expected one example or a batch (N, ...) of "
                f"examples of shape {self.data_shape}"
            )
        if len(t) == 0:
            raise DataError(f"x of shape {tuple(t.shape)} holds no examples; pass at least one")
        _check_finite(t, "x", "example")
        if self.info["data"].get("kind") in ("binary", "grey"):
            check_unit_interval(
                t, f"this run was trained on data in [0, 1] ({self.info['data'].get('name')})"
            )
        return t.to(device=self.device, dtype=torch.float32)

    def _y(self, y: Any, n: int | None = None) -> Tensor | None:
        """Labels for ``n`` examples (a single class is repeated), or for any leading shape
        when ``n`` is None: class indices or one-hot rows; refused by a model that is not
        conditional, required by one that is. Labels of the wrong width, shape or range are
        a DataError naming the classes the model takes."""
        if not self.num_classes and y is not None:
            raise DataError(NOT_CONDITIONAL)
        if y is None:
            return None  # a conditional model's encoder or decoder says what is missing
        c = self.num_classes
        expected = (
            f"this model is conditional on {c} classes: pass class indices 0..{c - 1} "
            f"(shape ({'N' if n is None else n},)) or one-hot rows of length {c}"
        )
        try:
            t = _user_tensor(y, "y").to(self.device)
        except DataError as e:
            raise DataError(f"{e}; {expected}") from None
        one_hot = t.dim() >= 2 and t.shape[-1] == c
        if t.dim() == 0 and n is not None:
            t = t.expand(n)
        lead = tuple(t.shape[:-1] if one_hot else t.shape)
        if n is not None and lead != (n,):
            count = (
                f"{lead[0]} labels (shape {tuple(t.shape)})"
                if len(lead) == 1
                else f"labels of shape {tuple(t.shape)}"
            )
            raise DataError(f"got {count} for {n} examples; {expected}")
        if t.dtype == torch.bool or t.is_complex():
            raise DataError(f"labels of type {t.dtype}: {expected}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataError(f"labels hold NaN or infinite values; {expected}")
        if one_hot and bool((t < 0).any()):
            raise DataError(f"one-hot rows hold negative values; {expected}")
        if not one_hot and t.numel():
            if t.is_floating_point() and not bool((t == t.round()).all()):
                raise DataError(f"labels of shape {tuple(t.shape)} hold non-integers; {expected}")
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= c:
                raise DataError(f"labels in {lo}..{hi}; {expected}")
        return t

    def _count(self, n: Any, what: str = "n") -> int:
        """A count argument: a whole number >= 1 (a UsageError otherwise)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise UsageError(f"{what} must be a whole number >= 1, got {short(n)}")
        if n < 1:
            raise UsageError(f"{what} must be >= 1, got {n}")
        return int(n)

    # -- the encoder ------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, x: Any, y: Any = None) -> Distribution:
        """The posterior q(z | x[, y]) with batch shape ``(N,)`` and event ``(latent_dim,)``."""
        xt = self._x(x)
        return self.model.encode(xt, self._y(y, len(xt)))

    def transform(self, x: Any, y: Any = None) -> Tensor:
        """The posterior mean: the encoder model of the tutorials (x -> z)."""
        return self.encode(x, y).mean

    # -- the generator ----------------------------------------------------------------------

    @torch.inference_mode()
    def decode(self, z: Any, y: Any = None) -> Distribution:
        """The likelihood p(x | z[, y]) with batch shape ``z.shape[:-1]``; ``log_prob`` sums over the data."""
        zt = _as_tensor(z, self.device)
        if zt.dim() == 0 or zt.shape[-1] != self.latent_dim:
            raise DataError(
                f"z must end in the latent dimension {self.latent_dim}, got shape {tuple(zt.shape)}"
            )
        _check_finite(zt, "z", "code")
        # One label (a class index or a one-hot row) decodes every z; else one per z.
        yt = self._y(y)
        if yt is not None:
            lead = yt.shape[:-1] if yt.dim() >= 2 and yt.shape[-1] == self.num_classes else yt.shape
            try:
                torch.broadcast_shapes(lead, zt.shape[:-1])
            except RuntimeError:
                raise DataError(
                    f"labels of shape {tuple(yt.shape)} do not match z of shape {tuple(zt.shape)}: "
                    f"pass one label, or one per z (class indices 0..{self.num_classes - 1} or "
                    f"one-hot rows of length {self.num_classes})"
                ) from None
        return self.model.decode(zt, yt)

    def generate(self, z: Any, y: Any = None) -> Tensor:
        """The mean of p(x | z): the generator model of the tutorials (z -> x)."""
        return self.decode(z, y).mean

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        y: Any = None,
        *,
        draw: bool = False,
        sampler: str = "prior",
        temperature: float = 1.0,
    ) -> Tensor:
        """``n`` examples from the model. A conditional model draws class ``y`` (one class or
        one label each), or cycles through its classes when ``y`` is None.

        By default each example is the mean of p(x|z) at a drawn z: smooth images, but for
        real-valued data rows with less spread than the data (the likelihood's noise is left
        out). ``draw=True`` draws x ~ p(x|z) instead: synthetic rows whose spread is the
        model's (binary pixels for a Bernoulli likelihood).

        ``sampler`` draws the codes: ``prior`` (p(z)), or a post-hoc sampler fitted to the
        run's codes (``gmm``, ``flow``, ``two-stage``; fitted and saved on first use, see
        :meth:`sampler`). ``temperature`` < 1 draws closer to the sampler's modes (with the prior: narrows
        every layer's spread, in a hierarchy).
        """
        n = self._count(n)
        t = temperature
        if (
            isinstance(t, bool)
            or not isinstance(t, numbers.Real)
            or not (math.isfinite(t) and t > 0)
        ):
            raise UsageError(f"temperature must be a positive number, got {short(temperature)}")
        labels = None if (y is None and self.num_classes) else self._y(y, n)
        z = None
        if sampler != "prior":
            z = self.sampler(sampler).sample(n, temperature).to(self.device)
        try:
            return self.model.sample(n, labels, mean=not draw, temperature=temperature, z=z)
        except NotImplementedError:
            if not draw:
                raise
            raise UsageError(
                f"the likelihood {self.config.model.likelihood.name} cannot draw x ~ p(x|z) "
                "(its distribution has no sample()); sample the means instead (draw=False)"
            ) from None

    def sampler(self, name: str) -> Sampler:
        """The post-hoc sampler ``name`` of this run (:mod:`vaekit.samplers`) as saved in
        ``RUN/samplers/NAME`` when it was fitted on these weights (``"prior"``: the model's
        own p(z)); else a SamplerError. Loading a run never trains: fit a sampler with
        ``vaekit fit-sampler RUN --sampler NAME`` or :func:`vaekit.samplers.load_sampler`
        (which fits it on first use)."""
        sampler, _ = saved_sampler(self, name, required=True)
        assert sampler is not None
        return sampler

    # -- the whole model --------------------------------------------------------------------

    @torch.inference_mode()
    def reconstruct(self, x: Any, y: Any = None) -> Tensor:
        """Mean of p(x | z) at the posterior mean."""
        xt = self._x(x)
        return self.model.reconstruct(xt, self._y(y, len(xt)))

    @torch.inference_mode()
    def elbo(self, x: Any, y: Any = None, samples: int = 1) -> dict[str, Tensor]:
        """Per-example ELBO and its terms (``recon`` = -E[log p(x|z)], ``kl``) in nats."""
        samples = self._count(samples, "samples")
        xt = self._x(x)
        yt = self._y(y, len(xt))
        posterior = self.model.composition.posterior
        if not (posterior.stochastic or posterior.density):
            return AutoencoderLoss()(self.model, xt, yt).terms
        if not posterior.density:
            raise RunError(
                f"{self.dir}: this posterior has no density (an implicit posterior of adversarial "
                "VB), so its ELBO needs the trained discriminator: read the per-epoch ELBO "
                "estimate in metrics.jsonl instead"
            )
        kl = getattr(self.config.objective.options, "kl", "auto")
        if self.model.classifier is not None:
            # M2's bound on log p(x), the labels summed out under q(y|x).
            return M2(samples=samples, kl=kl)(self.model, xt, None).terms
        return ELBO(samples=samples, kl=kl)(self.model, xt, yt).terms

    def dataset(
        self,
        data_dir: str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        allow_changed: bool = False,
        data: Any = None,
    ) -> Dataset:
        """The run's splits: exactly the examples training used (see :func:`run_data`).

        ``path`` is where the data are now when they have moved; ``data`` the data given in
        Python to ``vaekit.fit`` (the same arrays, tensors or torch Dataset); data that changed
        since training are an error unless ``allow_changed``.
        """
        return run_data(
            self.dir,
            self.config,
            self.info.get("data"),
            data_dir=data_dir,
            path=path,
            allow_changed=allow_changed,
            source=None if data is None else python_dataset(data, seed=self.config.train.seed),
        )

    def encode_split(
        self, split: str = "test", *, dataset: Dataset | None = None, batch_size: int = 1000
    ) -> dict[str, np.ndarray]:
        """Every example of a split encoded, as ``vaekit encode`` writes it: ``mean`` and
        ``var`` of q(z|x) ``(N, latent_dim)``, ``codes`` (a discrete model's code indices)
        and ``labels`` when the data have them (:func:`vaekit.moments.encode_part`).
        ``dataset``: the run's data (default: :meth:`dataset`);
        :func:`vaekit.export.write_encoding` writes the result as .npy or .csv.

        The training split is encoded as the model saw it (one seeded binary draw of
        dynamically binarized data, :func:`vaekit.data.model_view`)."""
        if split not in ("train", "valid", "test"):
            raise UsageError(f"split must be train, valid or test, got {split!r}")
        part = (dataset if dataset is not None else self.dataset()).split(split)
        if split == "train":
            part = model_view(part, self.config.data.binarize, self.config.train.seed)
        return encode_part(self.model, part, batch_size=batch_size)


def load(
    run_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    weights: str = "last",
    *,
    model: VAE | None = None,
    stage: str = "auto",
) -> Run:
    """Load a trained run: ``vaekit.load("runs/demo").encode(x)``; ``"zoo:NAME"`` loads a
    model of the zoo (:mod:`vaekit.zoo`), checked against its manifest.

    ``weights="last"`` takes the newest weights; ``"best"`` those of the epoch with the
    best validation score (``RUN/best.safetensors``, kept when the data has a validation
    split and ``train.keep_best`` is on). ``model``: a model you built again in Python
    (the run was trained from your own modules with :func:`vaekit.fit`): its weights are
    loaded from the run, which must fit it exactly. ``stage``: a run with a second stage
    (a prior fitted to its codes in ``RUN/prior``, :mod:`vaekit.stages`) loads that one
    ("auto", or "prior"); ``"model"`` is the run as first trained.
    """
    return Run.from_dir(run_dir, device, weights, model=model, stage=stage)


def zoo_name(run_dir: str | os.PathLike[str]) -> tuple[str, Path | None] | None:
    """The zoo model a RUN names, and the zoo's folder when the RUN gives it: ``zoo:NAME``
    (the zoo :func:`vaekit.zoo.zoo_dir` finds), or a path into a read-only folder
    (:data:`READ_ONLY_MARK`), such as ``zoo/NAME`` of a checkout; None for any other run."""
    if isinstance(run_dir, str) and run_dir.startswith(ZOO_PREFIX):
        return run_dir[len(ZOO_PREFIX) :], None
    folder = read_only_folder(run_dir)
    if folder is None:
        return None
    inside = Path(run_dir).expanduser().absolute().resolve().relative_to(folder).parts
    return (inside[0], folder) if inside else None


def run_location(
    run_dir: str | os.PathLike[str], weights: str = "last", stage: str = "auto"
) -> tuple[Path, str]:
    """The run directory a RUN names and the weights to load from it: a path as it is, or
    for a zoo model (:func:`zoo_name`) its checked copy in the cache and the weights it
    ships (:func:`vaekit.zoo.zoo_run`), so that nothing is written into the zoo. Every
    loader resolves a RUN here, once."""
    zoo = zoo_name(run_dir)
    if zoo is None:
        return Path(run_dir), weights
    return zoo_run(zoo[0], weights, stage, root=zoo[1], owned=RUN_OWNED)


def saved_sampler(
    run: Run, name: str, options: Mapping[str, Any] | None = None, *, required: bool = False
) -> tuple[Sampler | None, str]:
    """The sampler ``name`` saved in ``RUN/samplers/NAME`` when it was fitted on the weights
    the run has loaded (and with ``options``, when they are given); else None and why not
    (``required``: a SamplerError that says how to fit it). ``"prior"`` is the model's own
    p(z), never saved; a conditional model has no other."""
    # The samplers' classes cost ~20 ms to create: loaded on first use, not by the trainer
    # (which imports this module and never samples).
    from vaekit.latent_samplers import (
        SAMPLER_FILE,
        SAMPLERS_DIR,
        PriorSampler,
        SamplerError,
        check_unconditional,
        model_digest,
        sampler_class,
        sampler_options,
    )

    cls = sampler_class(name)
    if not cls.needs_fit:
        return PriorSampler(run.prior), ""
    check_unconditional(run.num_classes, name)
    folder = run.dir / SAMPLERS_DIR / name
    sampler: Sampler | None = None
    if not (folder / SAMPLER_FILE).is_file():
        reason = "it has not been fitted yet"
    else:
        try:
            sampler = cls.load(folder, open_run=load)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            reason = f"the saved one cannot be read ({str(e).splitlines()[0] if str(e) else e})"
        else:
            wanted = sampler_options(cls.Options, dict(options or {}), f"the {name} sampler")
            if sampler.info.get("weights_sha256") != model_digest(run.model):
                reason = (
                    f"the saved one was fitted on other weights ({sampler.info.get('weights')} "
                    f"weights of epoch {sampler.info.get('weights_epoch')})"
                )
            elif options and dataclasses.asdict(wanted) != sampler.info.get("options"):
                reason = "the saved one was fitted with other options"
            else:
                return sampler, ""
    if required:
        raise SamplerError(
            f"no usable {name} sampler in {run.dir}: {reason}; fit it with "
            f"`vaekit fit-sampler {run.dir} --sampler {name}` "
            f"(Python: vaekit.samplers.load_sampler(run, {name!r}))"
        )
    return None, reason


def read_data_info(run_dir: Path) -> dict[str, Any] | None:
    """``model.json``'s ``data`` section (None when it is missing or unreadable)."""
    try:
        info = json.loads((Path(run_dir) / "model.json").read_text())
    except (OSError, ValueError):
        return None
    data = info.get("data") if isinstance(info, dict) else None
    return data if isinstance(data, dict) else None


_MOVED_HINT = "pass where they are now with --dataset PATH (Python: run.dataset(path=...))"


def run_data(
    run_dir: Path,
    config: Config,
    data_info: Mapping[str, Any] | None,
    *,
    data_dir: str | None = None,
    path: str | os.PathLike[str] | None = None,
    allow_changed: bool = False,
    moved_hint: str = _MOVED_HINT,
    source: Dataset | None = None,
) -> Dataset:
    """The splits a run was trained on, checked against the fingerprint in its model.json.

    ``data_info`` is model.json's ``data`` section; ``path`` replaces the recorded data
    path (moved data pass the check as long as they are the same); ``source`` is data
    given in Python for a run trained on such data. Data that changed since training are
    a DataError saying what changed, unless ``allow_changed``.
    """
    d = config.data
    name = str(path) if path is not None else d.name
    if source is not None:
        ds = training_data(d, config.train.seed, source=source)
        return _checked(run_dir, (data_info or {}).get("fingerprint"), ds, allow_changed)
    if (
        path is None
        and name != PYTHON_DATA
        and name not in NAMED
        and not is_import_path(name)
        and not Path(name).expanduser().exists()
    ):
        raise DataError(
            f"{run_dir} was trained on {name}, which is not there any more; {moved_hint}"
        )
    saved = (data_info or {}).get("fingerprint")
    seed = config.train.seed
    if data_info is not None and saved is None and d.limit:
        # Runs from before fingerprints trained on the first data.limit examples.
        ds = training_data(replace(d, limit=0), seed, data_dir_=data_dir, name=name)
        ds.train = ds.train.take(d.limit)
    else:
        ds = training_data(d, seed, data_dir_=data_dir, name=name)
    return _checked(run_dir, saved, ds, allow_changed)


def _checked(run_dir: Path, saved: Any, ds: Dataset, allow_changed: bool) -> Dataset:
    """``ds`` when its fingerprint matches the recorded one (or changes are allowed)."""
    assert ds.fingerprint is not None
    change = data_change(saved, ds.fingerprint)
    if change is not None and not allow_changed:
        raise DataError(
            f"the data of {run_dir} changed since it was trained: {change}. Its splits would "
            "no longer hold the examples training used; restore the data, or pass "
            "--allow-changed-data (Python: allow_changed=True) to go on with them as they are now"
        )
    return ds


def write_run_files(run_dir: Path, cfg: Config, data_info: dict[str, Any]) -> None:
    """config.json and model.json of a new run."""
    write_json(run_dir / "config.json", config_to_dict(cfg))
    write_json(run_dir / "model.json", {"vaekit_version": __version__, "data": data_info})
