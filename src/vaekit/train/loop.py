"""The trainer: one loop that reads top to bottom.

:func:`fit` is a sequence of named phases, each a function of explicit state, followed by
one ``while`` loop over epochs (nanoGPT's ``train.py`` is the model)::

    setup (config, device, precision) -> data -> build (model, objective, optimisers)
    -> start or resume -> per epoch: [batches -> train_step -> non-finite guard] ->
    end of epoch (reduce, evaluate, best weights, metrics line, trackers) -> checkpoint

Exact resume: data order depends only on (seed, epoch), and a checkpoint holds the
weights, optimiser states, learning-rate scale, every rank's RNG states (torch CPU and
CUDA, numpy, Python; dynamic binarization, data.resample and Monte Carlo samples draw
from them) and, for an interrupted epoch, the position in it and the partial sums. A run
resumed from any checkpoint ends with the same weights and metrics, bit for bit on CPU,
as one that never stopped. SIGINT/SIGTERM finish the current step, write such a checkpoint
and say how to resume.

Non-finite loss or gradients are caught every step (one scalar read) and handled by
``train.nan_policy``: ``skip`` (default) drops the update; ``rollback`` also restores
the state at the start of the epoch and halves the learning rate; ``stop`` ends
training with an error. Weights that have become non-finite are always rolled back.
More than ``train.max_bad_steps`` bad steps in one epoch stop training.

Data come from the config (named datasets, files, ``module:function``) or from Python
(``fit(..., data=...)``: arrays, tensors, a dict of splits, or a torch ``Dataset`` read
batch by batch through a ``DataLoader``; see :mod:`vaekit.data.stream`). Data in memory
are index-sliced on the device, which keeps resume bit-identical.

Distributed: under ``torchrun --nproc_per_node=N`` the loop runs DistributedDataParallel
(gloo on CPU, NCCL on CUDA). Every epoch's shuffled order is cut into N disjoint,
equal, strided shards (the ``n mod N`` examples left over change every epoch), and each
process takes ``train.batch_size`` examples of its shard per step, so the **effective
batch is ``batch_size x N``**. DDP averages gradients over the processes, so the
learning rate ``train.lr`` applies to that effective batch unchanged: an N-process
run with ``batch_size = B / N`` takes the same steps on the same examples as a 1-process
run with ``batch_size = B`` and the same ``lr``, up to Monte Carlo noise (each rank has
its own RNG stream). Metrics are summed across processes; only rank 0 prints, logs and
writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from vaekit.config import (
    Config,
    ConfigError,
    PartConfig,
    config_from_dict,
    config_to_dict,
    parse_part,
    unnoted_settings,
)
from vaekit.data import (
    Dataset,
    Split,
    StreamSplit,
    data_change,
    limit_examples,
    python_dataset,
    resolve_data_name,
    training_data,
)
from vaekit.data.stream import PYTHON_DATA, split_batches
from vaekit.distributions.likelihoods import unit_scale_hint, values_checked
from vaekit.errors import VaekitError
from vaekit.model import VAE, build_model, check_part_shapes, network_precision
from vaekit.objectives import Objective, build_objective, warmup_epochs
from vaekit.optim import lr_factor, make_optimizer
from vaekit.parts import PYTHON_PART, NoOptions, ObjectiveAbilities
from vaekit.registry import LIKELIHOODS, OBJECTIVES
from vaekit.rundir import (
    BEST_WEIGHTS,
    METRICS_FILE,
    RunError,
    atomic_write,
    check_not_run_file,
    damaged_line_text,
    init_weights,
    metrics_line,
    metrics_lines,
    no_run_dir,
    python_given,
    read_data_info,
    read_metrics,
    read_run_config,
    resume_hint,
    resume_option,
    run_data,
    run_lock,
    save_weights,
    write_json,
    write_run_files,
)
from vaekit.trackers import Tracker, open_trackers, safely
from vaekit.train.checkpoint import (
    EpochProgress,
    TrainState,
    capture_rng,
    read_checkpoint,
    remove_partial_writes,
    write_checkpoint,
)
from vaekit.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    any_rank,
    gather_objects,
    setup_distributed,
    shard,
    teardown_distributed,
)
from vaekit.train.ema import WeightAverage
from vaekit.train.faults import FaultInjector, GracefulStop, weights_digest, write_rank_digest

__all__ = [
    "TrainingError",
    "TrainingInterrupted",
    "fit",
    "evaluate_split",
    "make_optimizer",
    "resolve_device",
]

# Under DDP the ranks agree on a stop request every this many steps (one tiny all-reduce).
STOP_SYNC_EVERY = 16


class TrainingError(VaekitError, RuntimeError):
    """Training cannot go on; the message says why and what to do."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint was written; resume continues it."""

    def __init__(self, message: str, checkpoint: Path | None = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def resolve_device(name: str, dist: DistInfo | None = None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; under torchrun ``cuda`` is this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device={name} but no CUDA device is available; use train.device=cpu"
            )
        if dist is not None and dist.world_size > 1 and name == "cuda":
            name = f"cuda:{dist.local_rank}"
    return torch.device(name)


class _LossModule(nn.Module):
    """Model + objective as one module, so DDP sees a forward() it can hook."""

    def __init__(self, model: VAE, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(
        self, x: Tensor, y: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor] | None]:
        out = self.objective(self.model, x, y)
        return out.loss, out.terms, out.losses


@torch.inference_mode()
def evaluate_split(
    model: VAE, objective: Objective, split: Split | StreamSplit, batch_size: int
) -> dict[str, Tensor]:
    """Sum of every per-example term of the objective over a split (tensors on device)."""
    model.eval()
    sums: dict[str, Tensor] = {}
    for x, y in split_batches(split, batch_size):
        out = objective(model, x, y)
        for k, v in out.terms.items():
            s = v.detach().sum()
            sums[k] = sums[k] + s if k in sums else s
    model.train()
    return sums


# -- the state of one call, phase by phase ------------------------------------------------------


@dataclass
class Session:
    """What stays fixed while training: the run, its config, where and how it computes."""

    run_dir: Path
    cfg: Config
    dist: DistInfo
    device: torch.device
    compute_dtype: torch.dtype | None
    faults: FaultInjector | None
    log: Any
    progress: bool
    resume: bool
    # A resume changed train.* settings (epochs, patience, threads, device): config.json
    # records them once the run goes on.
    changed: bool = False
    # A resumed run's model.json data section (its fingerprint is checked).
    saved_data: dict[str, Any] | None = None

    @property
    def t(self) -> Any:
        return self.cfg.train

    @property
    def main(self) -> bool:
        return self.dist.rank == 0

    def say(self, text: str, *, err: bool = False) -> None:
        """Print on rank 0 only (to stderr for warnings)."""
        if self.main:
            print(text, file=sys.stderr if err else self.log, flush=True)


@dataclass
class TrainingData:
    """The splits on the device and how an epoch is cut into batches."""

    ds: Dataset
    train: Split | StreamSplit
    valid: Split | StreamSplit | None
    test: Split | StreamSplit
    batch: int
    steps_per_epoch: int
    dynamic: bool
    # The data came with a validation split of their own (not held out of train).
    own_valid: bool = False
    # data.labels: the training examples whose label is kept, when the others are hidden
    # (each batch then takes labelled examples beside the others, _epoch_batches).
    labelled: Tensor | None = None
    # data.resample=gaussian: the training codes' standard deviations, sqrt(var); each
    # batch is then a fresh draw of N(mean, var) (_epoch_batches). None otherwise.
    noise_sd: Tensor | None = None

    @property
    def n(self) -> int:
        return len(self.train)

    @property
    def checked(self) -> bool:
        """Whether every value is known to lie in [0, 1]: splits in memory whose kind,
        read off their values when loaded, is binary or grey. Batches read from files
        as they go were not all read, and keep the likelihood's check of each batch."""
        splits = (self.train, self.valid, self.test)
        in_memory = all(sp is None or isinstance(sp, Split) for sp in splits)
        return in_memory and self.ds.kind in ("binary", "grey")


@dataclass
class Parts:
    """The model, the objective and their optimisers (and the DDP wrapper, if any)."""

    loss_module: _LossModule
    optimizers: dict[str, torch.optim.Optimizer]
    groups: dict[str, list[nn.Parameter]]
    bound: ObjectiveAbilities
    step_module: nn.Module
    # The weights' moving average (train.ema), None when off.
    ema: WeightAverage[VAE] | None = None

    @property
    def model(self) -> VAE:
        return self.loss_module.model

    @property
    def scored(self) -> VAE:
        """The model the splits are scored with and the run's weights are written from:
        the moving average of the weights with train.ema, else the trained model."""
        return self.model if self.ema is None else self.ema.module

    @property
    def objective(self) -> Objective:
        return self.loss_module.objective

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for ps in self.groups.values() for p in ps]


@dataclass
class Progress:
    """Where training stands: counters, the epoch's running sums, a snapshot to roll back to."""

    state: TrainState = field(default_factory=TrainState)
    epoch: EpochProgress = field(default_factory=EpochProgress)
    good: dict[str, Any] = field(default_factory=dict)
    bar: Any = None  # the epoch's progress bar


# -- helpers --------------------------------------------------------------------------------------


def _epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    # Data order depends only on (seed, epoch): a resumed run sees the same batches.
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def _set_epoch(model: nn.Module, objective: Objective, epoch: int) -> None:
    """Tell the objective and every part of the model that has a schedule the epoch."""
    objective.set_epoch(epoch)
    for module in model.modules():
        hook = getattr(module, "set_epoch", None)
        if callable(hook) and module is not model:
            hook(epoch)


def _patience_spent(state: TrainState, patience: int, warmup: int) -> bool:
    """Early stopping: no better validation score in ``patience`` epochs after the warm-up."""
    return patience > 0 and state.epoch - max(state.best_epoch, warmup) >= patience


def _early_stop_text(state: TrainState, patience: int) -> str:
    return (
        f"stopped early after epoch {state.epoch}: the validation score has not improved for "
        f"{patience} epochs (train.patience) since epoch {state.best_epoch}"
    )


def _fmt(terms: dict[str, float], bound: ObjectiveAbilities, loss_note: str | None = None) -> str:
    """One split's mean terms as the epoch line prints them: the bound as papers report it
    (the negative ELBO, not the training loss, which a KL warm-up or a beta weighs), then
    the other terms. With ``loss_note`` (the training split) the loss the optimiser
    minimised follows when it is not that bound, with what weighs it."""
    if bound.bound in terms:
        figure, name = -bound.score(terms), bound.bound_label
        if bound.sign > 0:  # a log-likelihood bound: its negative, in nats, as papers report it
            name = "-" + name
    else:  # an objective of yours that does not report the term it names as its bound
        figure, name = terms.get("loss", math.nan), "loss"
    skip = {"loss", "elbo", bound.bound}
    inside = ", ".join(f"{k} {v:.3f}" for k, v in terms.items() if k not in skip)
    loss = terms.get("loss")
    if loss_note is not None and loss is not None and name != "loss":
        weighted = abs(loss - figure) > max(1e-3, 1e-5 * abs(figure))
        if loss_note or weighted:
            why = loss_note or "not the bound"
            inside += f"{'; ' if inside else ''}trained on loss {loss:.3f}: {why}"
    text = f"{name} {figure:.3f}"
    return f"{text} ({inside})" if inside else text


def _seed_everything(seed: int) -> None:
    # Parts may draw from numpy's or Python's global RNG too; checkpoints save all three.
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _snapshot(
    module: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    ema: WeightAverage | None = None,
) -> dict[str, Any]:
    return {
        "module": copy.deepcopy(module.state_dict()),
        "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in optimizers.items()},
        **({} if ema is None else {"ema": copy.deepcopy(ema.module.state_dict())}),
    }


def _set_lr(optimizers: dict[str, torch.optim.Optimizer], lr: float) -> None:
    for o in optimizers.values():
        for g in o.param_groups:
            # A group's own factor (a part's lr_scales(), see _optimizer).
            g["lr"] = lr * g.get("lr_scale", 1.0)


def _lr(s: Session, progress: Progress) -> float:
    """train.lr x the NaN-recovery scale x the schedule's factor for the epoch in progress."""
    t, state = s.t, progress.state
    return t.lr * state.lr_scale * lr_factor(t.lr_schedule, state.epoch + 1, t.epochs)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _resume_hint(s: Session, epochs: str = "") -> str:
    """How to continue this run, as it can be (the command line, torchrun, or Python)."""
    return resume_hint(s.run_dir, s.cfg, epochs=epochs, processes=s.dist.world_size)


@contextlib.contextmanager
def _hold_run_dir(run_dir: Path, dist: DistInfo, create: bool) -> Iterator[None]:
    """Rank 0 holds the run directory's lock (:func:`vaekit.rundir.run_lock`) while
    training; under torchrun every rank learns whether it got it, so all stop together."""
    with contextlib.ExitStack() as held:
        refused: RunError | None = None
        if dist.rank == 0:
            try:
                held.enter_context(run_lock(run_dir, "vaekit train", create=create))
            except RunError as e:
                refused = e
        if dist.world_size > 1:
            text = all_gather_objects(None if refused is None else str(refused), dist)[0]
            if text is not None and refused is None:
                refused = RunError(text)
        if refused is not None:
            raise refused
        yield


# -- the public entry point -------------------------------------------------------------------


def fit(
    cfg: Config | VAE | None,
    run_dir: str | os.PathLike[str],
    *,
    data: Any = None,
    objective: str | dict[str, Any] | Objective | None = None,
    resume: bool = False,
    epochs: int | None = None,
    data_dir: str | None = None,
    progress: bool | None = None,
    log: Any = None,
    patience: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    allow_changed_data: bool = False,
    _within_run: bool = False,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Train (or resume) a run and return its metrics, one dict per epoch.

    ``cfg`` is a :class:`~vaekit.config.Config`, or a model built in Python (a
    :class:`~vaekit.model.VAE`, e.g. from :func:`vaekit.compose` with your own networks);
    None with ``resume=True`` continues the run in ``run_dir`` from its config.json. The
    run directory is the same either way.

    - ``data``: data held in Python instead of the config's dataset: an array or tensor
      ``(N, ...)``, a pair ``(x, y)``, a dict of splits, a vaekit Dataset, or a torch
      ``Dataset`` read batch by batch (see :mod:`vaekit.data.stream`). A run trained on
      such data is resumed with the same ``data``.
    - ``objective``: with a model, the objective by name (``"iwae"``), as a mapping with its
      options (``{"name": "iwae", "samples": 5}``), or an :class:`Objective` you built.
    - ``settings``: ``train.*`` settings for a model (``batch_size=64, lr=3e-4``).
    - ``epochs``, ``patience``, ``threads`` and ``device`` replace those ``train.*``
      settings, on resume too (the run's config.json records the new values).

    Under torchrun this runs DistributedDataParallel (see the module docstring). Raises
    :class:`TrainingInterrupted` (a KeyboardInterrupt) after SIGINT/SIGTERM once a
    checkpoint is written, and :class:`TrainingError` when training diverges. A resumed
    run is bit-identical to an uninterrupted one at the same thread count and device; a
    resumed run whose data changed since it was trained is refused unless
    ``allow_changed_data``. A new run never starts inside another run's own files
    (``RUN/checkpoints``, ``RUN/prior``, ...: :func:`vaekit.rundir.check_not_run_file`);
    ``_within_run`` is for vaekit's own stages, which train into ``RUN/prior`` and
    ``RUN/samplers/NAME/run``.

    Example:
        >>> import numpy as np, vaekit
        >>> x = np.random.default_rng(0).random((200, 8, 8)).round()
        >>> model = vaekit.compose(latent_dim=2, data_shape=(1, 8, 8), encoder={"name": "mlp", "hidden": [32]})
        >>> rows = fit(model, "runs/doc", data=x, epochs=2, log=open(os.devnull, "w"))  # doctest: +SKIP
        >>> rows[-1]["epoch"]                                                          # doctest: +SKIP
        2
    """
    run_dir = Path(run_dir)
    if resume and not run_dir.is_dir():
        raise no_run_dir(run_dir, python=True)
    if not resume and not _within_run:
        # A run started in RUN/checkpoints or over RUN/model.json would break RUN.
        check_not_run_file(run_dir, "fit(): the run directory", example=None)
    log = log or sys.stdout
    dist = setup_distributed()
    changes = {"epochs": epochs, "patience": patience, "threads": threads, "device": device}
    given = _Given(cfg, data, objective, settings)
    try:
        with contextlib.ExitStack() as held:
            # One trainer per run directory, held until fit() returns: a second trainer of
            # the same run is refused before it reads or writes anything of it.
            held.enter_context(_hold_run_dir(run_dir, dist, create=not resume))
            history = _fit(
                given, run_dir, resume, changes, data_dir, progress, log, dist, allow_changed_data
            )
    except TrainingInterrupted:
        teardown_distributed(dist)  # every rank stopped at the same agreed point
        raise
    except BaseException:
        teardown_distributed(dist, ok=False)
        raise
    teardown_distributed(dist)
    return history


@dataclass
class _Given:
    """What the caller handed to :func:`fit` beyond the run directory."""

    cfg: Config | VAE | None
    data: Any
    objective: str | dict[str, Any] | Objective | None
    settings: dict[str, Any]

    @property
    def model(self) -> VAE | None:
        return self.cfg if isinstance(self.cfg, VAE) else None


def _fit(
    given: _Given,
    run_dir: Path,
    resume: bool,
    changes: dict[str, Any],
    data_dir: str | None,
    progress: bool | None,
    log: Any,
    dist: DistInfo,
    allow_changed_data: bool,
) -> list[dict[str, Any]]:
    s = setup(given, run_dir, resume, changes, progress, log, dist)
    if not resume:
        # Settings that change nothing (vaekit.config.ignored_settings), however the config
        # was made: load_config has said those of a file already, a Config built in Python
        # has had no word yet.
        for why in unnoted_settings(s.cfg, given.cfg).values():
            s.say(f"note: {why}", err=True)
    data = load_data(s, given, data_dir, allow_changed_data)
    parts = build(s, given, data)
    if not resume:
        _note_validation(s, data)
    prog = start_or_resume(s, data, parts)
    if prog is None:
        return read_metrics(run_dir, warn=False)  # damaged lines: said on resume
    parts.step_module = _distributed(s, parts, prog)
    _announce(s, data, parts)
    trackers = _open_trackers(s)
    history = read_metrics(run_dir, warn=False) if s.main else []
    t = s.t
    try:
        # The likelihood's range check of every batch is left out for data read whole
        # and found in [0, 1] when loaded (TrainingData.checked).
        with GracefulStop(escalate=dist.world_size == 1) as stop, values_checked(data.checked):
            while prog.state.epoch < t.epochs:
                epoch = prog.state.epoch + 1
                start = time.perf_counter()
                _set_lr(parts.optimizers, _lr(s, prog))
                # Schedules (KL warm-up, a posterior's temperature) read the epoch here.
                _set_epoch(parts.model, parts.objective, epoch)
                if parts.ema is not None:  # its copies of the parts score this epoch
                    _set_epoch(parts.ema.module, parts.objective, epoch)
                for i, x, y in _epoch_batches(s, data, prog, epoch):
                    loss = train_step(s, data, parts, prog, x, y, epoch, i)
                    if s.progress and (i % 20 == 0 or i == data.steps_per_epoch - 1):
                        prog.bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                    # A stop request mid-epoch: checkpoint the position and partial sums.
                    if (
                        prog.state.batch < data.steps_per_epoch
                        and (dist.world_size == 1 or prog.state.batch % STOP_SYNC_EVERY == 0)
                        and any_rank(stop.requested, dist, s.device)
                    ):
                        where = f"at epoch {epoch}, batch {prog.state.batch}/{data.steps_per_epoch}"
                        raise _interrupted(s, stop, where, _checkpoint(s, parts, prog))
                train_seconds = time.perf_counter() - start
                row = end_of_epoch(s, data, parts, prog, epoch, start, train_seconds)
                if s.main:
                    history.append(row)
                    trackers = safely(trackers, "log_epoch", row)
                stopping = any_rank(stop.requested, dist, s.device)
                # Every rank holds the same reduced validation score, so all stop together.
                early = _patience_spent(prog.state, t.patience, warmup_epochs(parts.objective))
                written = None
                if epoch % t.checkpoint_every == 0 or epoch == t.epochs or stopping or early:
                    written = _checkpoint(s, parts, prog)
                if stopping and epoch < t.epochs:
                    raise _interrupted(s, stop, f"after epoch {epoch}", written)
                if early and epoch < t.epochs:
                    s.say(
                        f"early stop: {_early_stop_text(prog.state, t.patience)}; "
                        f"the best weights are in {run_dir / BEST_WEIGHTS}"
                    )
                    break
        if trackers:
            trackers = _log_figures(trackers, data, parts, history)
    finally:
        safely(trackers, "close")
    _finish(s, parts)
    return history


def _log_figures(
    trackers: list[Tracker], data: TrainingData, parts: Parts, history: list[dict[str, Any]]
) -> list[Tracker]:
    """At the end of training: the learning curves and, for images, prior samples."""
    # matplotlib costs ~1 s of start-up, and only a run that logs to trackers draws figures.
    from vaekit.training_figures import samples_figure, training_curves

    if not history:
        return trackers
    epoch = int(history[-1]["epoch"])
    trackers = safely(trackers, "log_figure", "training_curves", training_curves(history), epoch)
    if data.ds.is_image:
        model = parts.scored.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x = model.sample(64)
        parts.model.train()
        fig = samples_figure(x, model.data_shape)
        trackers = safely(trackers, "log_figure", "samples", fig, epoch)
    return trackers


# -- phase 1: setup -------------------------------------------------------------------------------


def setup(
    given: _Given,
    run_dir: Path,
    resume: bool,
    changes: dict[str, Any],
    progress: bool | None,
    log: Any,
    dist: DistInfo,
) -> Session:
    """The config (read back on resume, or made for a model built in Python), the device,
    the precision and the thread count."""
    if resume:
        cfg = read_run_config(run_dir)
    elif isinstance(given.cfg, Config):
        cfg = _with_given(copy.deepcopy(given.cfg), given)
    elif given.model is not None:
        cfg = _config_for_model(given)
    else:
        raise ConfigError("fit() needs a config or a model, or resume=True with a run directory")
    if not resume and given.data is None:
        # config.json records the data's absolute path: the run works from any directory.
        cfg = replace(cfg, data=replace(cfg.data, name=resolve_data_name(cfg.data.name)))
    # Settings a resume may change (train.epochs / patience / threads / device), read as
    # config.json is read, so that epochs=1.5 or threads="2" are refused as in a file.
    new = {k: v for k, v in changes.items() if v is not None and v != getattr(cfg.train, k)}
    changed = bool(new)
    if changed:
        plain = config_to_dict(cfg)
        plain["train"].update(new)
        try:
            cfg = config_from_dict(plain)
        except ConfigError as e:
            raise ConfigError(f"fit(): {e}") from None
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device, dist)
    compute_dtype = torch.bfloat16 if t.precision == "bf16" else None
    if compute_dtype is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"train.precision=bf16 needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
            "has none: use train.precision=fp32"
        )
    if progress is None:
        progress = dist.rank == 0 and sys.stderr.isatty()
    return Session(
        run_dir=run_dir,
        cfg=cfg,
        dist=dist,
        device=device,
        compute_dtype=compute_dtype,
        faults=FaultInjector.from_env(),
        log=log,
        progress=progress,
        resume=resume,
        changed=changed,
    )


def _config_for_model(given: _Given) -> Config:
    """The config.json of a run whose model was built in Python: its parts as far as they
    are registered ones (the others are described), with the objective, the data's name
    and the train settings given."""
    model = given.model
    assert model is not None
    model_cfg = getattr(model, "config", None)
    if model_cfg is None:
        raise ConfigError(
            "this model has no config: build it with vaekit.build_model(ModelConfig(...), shape) "
            "or vaekit.compose(...), which record what it is made of"
        )
    return _with_given(Config(model=copy.deepcopy(model_cfg)), given)


def _with_given(cfg: Config, given: _Given) -> Config:
    """``cfg`` with what fit() was handed: the objective, Python data (recorded by the name
    ``<python>``), and ``data.*``/``train.*`` settings by keyword; validated."""
    plain = config_to_dict(cfg)
    if given.objective is not None:
        if isinstance(given.objective, Objective):
            objective = _objective_part(given.objective)
        else:
            f = next(f for f in dataclasses.fields(Config) if f.name == "objective")
            objective = parse_part("objective", given.objective, "objective", f)
        plain["objective"] = config_to_dict(Config(objective=objective))["objective"]
    if given.data is not None:
        plain["data"]["name"] = PYTHON_DATA
    data_keys = {f.name for f in dataclasses.fields(type(cfg.data))} - {"name", "options"}
    for key, value in given.settings.items():
        section = "data" if key in data_keys else "train"
        plain[section][key] = value
    try:
        return config_from_dict(plain)
    except ConfigError as e:
        raise ConfigError(f"fit(): {e}") from None


def _objective_part(objective: Objective) -> PartConfig:
    """An objective object as config.json records it: its registered name and options when
    its class is a registered one, else its class's import path (not rebuilt from it: the
    run is resumed by passing the object again)."""
    given = getattr(objective, "init_options", {})
    for part in OBJECTIVES:
        if type(objective) is part.factory:
            names = {f.name for f in dataclasses.fields(part.options)}
            try:
                return PartConfig(
                    part.name, part.options(**{n: given[n] for n in names if n in given})
                )
            except TypeError:
                break
    cls = type(objective)
    return PartConfig(f"{PYTHON_PART}{cls.__module__}.{cls.__qualname__}", NoOptions())


# -- phase 2: data --------------------------------------------------------------------------------


def load_data(s: Session, given: _Given, data_dir: str | None, allow_changed: bool) -> TrainingData:
    """The training data (a resumed run's: checked against what its model.json recorded),
    on the device, and the checks they allow before anything is built."""
    cfg, t, dist = s.cfg, s.t, s.dist
    source = (
        None if given.data is None else python_dataset(given.data, seed=t.seed, workers=t.workers)
    )
    if s.resume:
        s.saved_data = read_data_info(s.run_dir)
        ds = run_data(
            s.run_dir,
            cfg,
            s.saved_data,
            data_dir=data_dir,
            allow_changed=allow_changed,
            moved_hint=f"move them back, or set data.name in {s.run_dir / 'config.json'} to "
            "where they are now (they are checked to be the same data)",
            source=source,
        )
    else:
        ds = training_data(cfg.data, t.seed, data_dir_=data_dir, source=source)
    _check_data_fits(cfg, ds)
    train = ds.train.to(s.device)
    valid: Split | StreamSplit | None = ds.valid
    test: Split | StreamSplit = ds.test
    if t.score_limit:  # each epoch scores a seeded subset of the validation and test splits
        valid = limit_examples(valid, t.score_limit, t.seed) if valid else None
        test = limit_examples(test, t.score_limit, t.seed)
    valid = valid.to(s.device) if valid else None
    test = test.to(s.device)
    if t.patience and valid is None:
        raise ConfigError(
            f"train.patience={t.patience} stops on the validation score, but {ds.name} has no "
            "validation split; set data.valid_fraction (e.g. 0.1) or train.patience=0"
        )
    if source is not None:
        own_valid = source.valid is not None
    else:  # the fingerprint counts the splits as loaded, before any were held out
        own_valid = "valid" in (ds.fingerprint or {}).get("examples", {})
    per_rank = len(train) // dist.world_size
    if per_rank == 0:
        raise ConfigError(
            f"{len(train)} training examples cannot be shared among {dist.world_size} processes; raise data.limit"
        )
    hidden = isinstance(train, Split) and train.y is not None and bool((train.y < 0).any())
    return TrainingData(
        ds=ds,
        train=train,
        valid=valid,
        test=test,
        batch=t.batch_size,
        steps_per_epoch=math.ceil(per_rank / t.batch_size),
        dynamic=cfg.data.binarize == "dynamic",
        own_valid=own_valid,
        labelled=torch.nonzero(train.y >= 0).squeeze(1) if hidden and train.y is not None else None,
        noise_sd=(
            train.var.sqrt()
            if cfg.data.resample == "gaussian"
            and isinstance(train, Split)
            and train.var is not None
            else None
        ),
    )


def _note_validation(s: Session, data: TrainingData) -> None:
    """Say when a validation setting changes nothing with these data (as a new run starts,
    once its model is built, so that a refused run prints its error alone):
    ``data.valid_fraction`` beside a validation split of the data's own, which is kept, and
    ``train.keep_best`` without any validation split, which keeps no best weights."""
    cfg, ds, own = s.cfg, data.ds, data.own_valid
    if cfg.data.valid_fraction > 0 and own:
        s.say(
            f"note: data.valid_fraction={cfg.data.valid_fraction} changes nothing: {ds.name} "
            f"has a validation split of its own ({len(ds.valid or ())} examples), which is "
            "used; leave data.valid_fraction out",
            err=True,
        )
    elif cfg.train.keep_best and ds.valid is None:
        s.say(
            f"note: {ds.name} has no validation split, so train.keep_best keeps no best "
            "weights (the result is the last epoch's); set data.valid_fraction (e.g. 0.1) to "
            "hold one out of train",
            err=True,
        )


def _check_data_fits(cfg: Config, ds: Dataset) -> None:
    """The likelihood must fit the data's kind, and a conditional model needs labels."""
    name = cfg.model.likelihood.name
    if ds.kind not in LIKELIHOODS.get(name).abilities.fits:
        fitting = [
            p.abilities.advice or p.name for p in LIKELIHOODS if ds.kind in p.abilities.exact
        ]
        what = {
            "real": "values outside [0, 1]",
            "grey": "grey levels in [0, 1]",
            "binary": "binary values",
        }[ds.kind]
        found = _value_range(ds) if ds.kind == "real" else None
        if found is not None and found[0] >= 0:
            # Non-negative values out of scale (8-bit levels, UCI digits' 0..16) are images
            # to rescale far more often than real-valued data: say that first.
            lo, hi, integral = found
            raise ConfigError(
                f"dataset {ds.name} has values in [{lo:.4g}, {hi:.4g}], but model.likelihood={name} "
                f"models data in [0, 1]: {unit_scale_hint(lo, hi, integral)}. If they are "
                f"real-valued measurements instead, use a likelihood of real values: {'; '.join(fitting)}"
            )
        if found is not None:
            what = f"values in [{found[0]:.4g}, {found[1]:.4g}]"
        raise ConfigError(
            f"dataset {ds.name} has {what}, which model.likelihood={name} does not model; use one "
            f"that does: {'; '.join(fitting)}"
        )
    m = cfg.model
    if m.conditional and ds.num_classes < 2 and not m.num_classes:
        raise ConfigError(f"model.conditional=true needs labels, but dataset {ds.name} has none")
    if m.conditional and m.num_classes and ds.num_classes > m.num_classes:
        raise ConfigError(
            f"model.num_classes={m.num_classes}, but dataset {ds.name} has labels 0..{ds.num_classes - 1}: "
            f"set model.num_classes={ds.num_classes} (or 0 to take it from the data)"
        )


def _value_range(ds: Dataset) -> tuple[float, float, bool] | None:
    """The smallest and largest value of the in-memory splits and whether all are whole
    numbers (None for data read batch by batch, which are not read through here)."""
    splits = [sp for sp in (ds.train, ds.valid, ds.test) if sp is not None]
    if not all(isinstance(sp, Split) for sp in splits):
        return None
    splits = [sp for sp in splits if len(sp)]
    if not splits:
        return None
    lo = min(float(sp.x.min()) for sp in splits)
    hi = max(float(sp.x.max()) for sp in splits)
    integral = all(bool((sp.x == sp.x.round()).all()) for sp in splits)
    return lo, hi, integral


# -- phase 3: build -------------------------------------------------------------------------------


def build(s: Session, given: _Given, data: TrainingData) -> Parts:
    """Model + objective on the device (built from the config, or the caller's objects),
    checked on two examples, and their optimisers."""
    cfg, t, ds = s.cfg, s.t, data.ds
    _seed_everything(t.seed + s.dist.rank)
    try:
        if given.model is not None:
            model = given.model.to(s.device)
            _check_model_fits(model, ds)
        else:
            model = build_model(cfg.model, ds.shape, ds.num_classes).to(s.device)
        if isinstance(given.objective, Objective):
            objective = given.objective.to(s.device)
        else:
            objective = build_objective(cfg.objective).to(s.device)
    except (ValueError, RuntimeError, MemoryError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(
            f"cannot build the model of this config for {ds.name} {tuple(ds.shape)}: {_first_line(e)}"
        ) from None
    loss_module = _LossModule(model, objective)
    _init_from_data(model, data, t.seed)
    if t.init:  # another run's weights to start from (a second stage); a checkpoint overrides
        init_weights(model, t.init)
    # Estimators that weigh a minibatch against the whole data (total correlation) need N.
    objective.set_dataset_size(len(data.train))
    # A semi-supervised objective weighs its labelled term by the number of labels kept.
    objective.set_labelled_size(len(data.train) if data.labelled is None else len(data.labelled))
    _check_one_batch(loss_module, data, s.device)
    groups = objective.param_groups(model)
    optimizers = {k: _optimizer(t, model, ps, s.device) for k, ps in groups.items()}
    # train.ema: the average starts from the initial weights (a resume loads its own).
    ema = WeightAverage(model, t.ema) if t.ema else None
    return Parts(loss_module, optimizers, groups, objective.abilities, loss_module, ema)


def _init_from_data(model: nn.Module, data: TrainingData, seed: int) -> None:
    """Parts that start from training examples (``init_from_data(x, generator, labels=y)``,
    or ``(x, generator)`` for a hook without labels: the VampPrior's pseudo-inputs with
    init=data; a VampPrior per class reads the labels) get them, drawn with a generator of
    their own so the run's random streams are the same either way. A checkpoint overrides
    them."""
    found = [getattr(m, "init_from_data", None) for m in model.modules()]
    hooks = [h for h in found if callable(h)]
    if not hooks:
        return
    train = data.train
    # Streamed data: the first examples (at most 10,000) in the order they come.
    x, y = (train.x, train.y) if isinstance(train, Split) else next(split_batches(train, 10_000))
    generator = torch.Generator().manual_seed(seed)
    for hook in hooks:
        # (A part of the user's written for the two-argument hook still gets two.)
        if "labels" in inspect.signature(hook).parameters:
            hook(x, generator, labels=y)
        else:
            hook(x, generator)


def _optimizer(
    t: Any, model: nn.Module, params: list[nn.Parameter], device: torch.device
) -> torch.optim.Optimizer:
    """The optimiser of ``params``; parameters whose module scales their learning rate
    (``lr_scales()``: the VampPrior's pseudo-inputs with lr_scale) get a parameter group
    of their own, whose ``lr_scale`` :func:`_set_lr` applies."""
    scales: dict[int, float] = {}
    for m in model.modules():
        hook = getattr(m, "lr_scales", None)
        if callable(hook):
            for name, factor in hook().items():
                scales[id(getattr(m, name))] = float(factor)
    by_scale: dict[float, list[nn.Parameter]] = {}
    for p in params:
        by_scale.setdefault(scales.get(id(p), 1.0), []).append(p)
    if not by_scale:  # nothing to optimise: torch's own error says so
        return make_optimizer(t.optimizer, params, t.lr, t.weight_decay, device)
    (first, ps), *others = by_scale.items()
    optimizer = make_optimizer(t.optimizer, ps, t.lr, t.weight_decay, device)
    if first != 1.0:
        optimizer.param_groups[0]["lr_scale"] = first
    for factor, ps in others:
        optimizer.add_param_group({"params": ps, "lr_scale": factor})
    return optimizer


def _check_model_fits(model: VAE, ds: Dataset) -> None:
    if tuple(model.data_shape) != tuple(ds.shape):
        raise ConfigError(
            f"the model was built for examples of shape {tuple(model.data_shape)}, but the data "
            f"{ds.name} have shape {tuple(ds.shape)}"
        )


def _check_one_batch(loss_module: _LossModule, data: TrainingData, device: torch.device) -> None:
    """Run a copy of the model on two examples, so that a model that cannot take this data
    fails with a clear message before anything is written (RNG streams untouched)."""
    probe = copy.deepcopy(loss_module).eval()
    x, y = next(split_batches(data.train, 2))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        try:
            # Each part's shapes first: a part that breaks them is named, not the data.
            # (A hidden label, data.labels, stands in as class 0: only shapes are checked.)
            labels = None if y is None else y.clamp_min(0)
            check_part_shapes(probe.model, x, labels if probe.model.num_classes else None)
            probe(x, y)
        except ConfigError:
            raise
        except (ValueError, RuntimeError, NotImplementedError, MemoryError) as e:
            ds = data.ds
            raise ConfigError(
                f"the model of this config cannot process {ds.name} examples of shape {tuple(ds.shape)}: {_first_line(e)}"
            ) from None


# -- phase 4: start or resume -----------------------------------------------------------------


def start_or_resume(s: Session, data: TrainingData, parts: Parts) -> Progress | None:
    """A new run's files, or the newest good checkpoint of an old one. None when there is
    nothing left to train (the epochs are done, or early stopping has spoken)."""
    cfg, t, ds, run_dir = s.cfg, s.t, data.ds, s.run_dir
    prog = Progress()
    if not s.resume:
        ckdir = run_dir / "checkpoints"
        if ckdir.is_dir() and any(ckdir.iterdir()):
            # The hint of the run that is there (how it was made), not of this one.
            try:
                there = read_run_config(run_dir)
            except RunError:
                there = cfg
            hint = resume_hint(run_dir, there, epochs="", processes=s.dist.world_size)
            other = "another run directory" if python_given(there) else "another --out"
            raise RunError(
                f"{run_dir} already holds a run; continue it with {hint} or choose {other}"
            )
        if s.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_files(run_dir, cfg, ds.info())
            (run_dir / "metrics.jsonl").write_text("")
    else:
        if s.main:
            remove_partial_writes(run_dir)
        loaded = read_checkpoint(
            run_dir,
            parts.model,
            parts.objective,
            parts.optimizers,
            ema=None if parts.ema is None else parts.ema.module,
            rank=s.dist.rank,
            world_size=s.dist.world_size,
            device=s.device,
            warn=s.main,
        )
        if loaded is None:
            # Killed before its first checkpoint: start again from the beginning.
            s.say(f"{run_dir} has no checkpoint yet; training it from the beginning")
            if s.main:
                write_run_files(run_dir, cfg, ds.info())
        else:
            state, mine, ckpt = loaded
            prog.state = state
            if mine is None:
                # Written by a different number of processes: continue with fresh, distinct streams.
                _seed_everything(t.seed + s.dist.rank + 7919 * (state.epoch + 1))
                s.say(
                    f"warning: {ckpt.name} was written by a different number of processes; "
                    "the random streams are re-seeded, so the run is no longer bit-reproducible",
                    err=True,
                )
            elif state.batch:
                prog.epoch = EpochProgress.from_saved(mine, s.device)
            s.say(f"resuming {run_dir} from {ckpt.name}")
        if s.main:
            _reconcile_metrics(s, prog.state.epoch, None if loaded is None else loaded[2].name)
        state, warmup = prog.state, warmup_epochs(parts.objective)
        if state.epoch < t.epochs and _patience_spent(state, t.patience, warmup):
            s.say(
                f"{run_dir} {_early_stop_text(state, t.patience)}; pass "
                f"{resume_option(cfg, 'patience')} with "
                f"N > {state.epoch - max(state.best_epoch, warmup)} (or 0, off) to train further"
            )
            return None
        if state.epoch >= t.epochs:
            s.say(
                f"{run_dir} already has {state.epoch} epochs; pass {resume_option(cfg, 'epochs')} "
                f"with N > {state.epoch} to train further: {_resume_hint(s, 'N')}"
            )
            return None
        if s.main and s.changed:
            # config.json records the new settings, so a later plain --resume keeps them.
            write_json(run_dir / "config.json", config_to_dict(cfg))
        assert ds.fingerprint is not None
        saved = (s.saved_data or {}).get("fingerprint")
        if s.main and data_change(saved, ds.fingerprint):
            # Allowed by allow_changed_data: from here on the run trains on these data.
            s.say(
                f"warning: {run_dir}: training goes on with changed data (--allow-changed-data); "
                "model.json now records them",
                err=True,
            )
            write_run_files(run_dir, cfg, ds.info())
    _set_lr(parts.optimizers, _lr(s, prog))
    prog.good = _snapshot(parts.loss_module, parts.optimizers, parts.ema)
    return prog


def _reconcile_metrics(s: Session, epoch: int, ckpt: str | None) -> None:
    """Make metrics.jsonl agree with the checkpoint of ``epoch`` that training resumes from
    (``ckpt``, None: from the beginning), rewriting as little as possible.

    Lines of later epochs are dropped: those epochs are trained again and logged anew (the
    same lines: resume is exact). Every other line is kept as written, a damaged one too
    (the weights do not contradict it; it is reported, naming the file and line), and a last
    line cut short is ended, so that the next epoch's line starts on a line of its own.
    """
    path = s.run_dir / METRICS_FILE
    lines, whole = metrics_lines(s.run_dir)
    kept = [ln for ln in lines if ln.epoch <= epoch]
    since = f"the checkpoint {ckpt}" if ckpt else "the start (there is no checkpoint)"
    for ln in lines:
        if ln.row is not None:
            continue
        if ln.epoch <= epoch:  # kept
            s.say(
                f"warning: {damaged_line_text(path, ln)}; {since} says epoch {ln.epoch} "
                "finished, so its figures are lost; the line is kept as it is and skipped "
                "by readers",
                err=True,
            )
        else:
            s.say(
                f"warning: {damaged_line_text(path, ln)}; epoch {ln.epoch} came after "
                f"{since} and is trained again, which writes its line anew",
                err=True,
            )
    later = sorted({ln.epoch for ln in lines if ln.epoch > epoch and ln.row is not None})
    if later:
        span = f"epoch {later[0]}" if len(later) == 1 else f"epochs {later[0]}-{later[-1]}"
        s.say(
            f"note: {path}: the lines of {span}, logged after {since}, are dropped; "
            "training repeats those epochs exactly"
        )
    if len(kept) == len(lines) and whole:
        return  # nothing to change: the file stays as it is
    with atomic_write(path, "w") as f:
        f.write("".join(ln.text + "\n" for ln in kept))


def _distributed(s: Session, parts: Parts, prog: Progress) -> nn.Module:
    """The module a training step calls: the loss module, wrapped in DDP under torchrun."""
    dist = s.dist
    if dist.world_size == 1:
        return parts.loss_module
    where = all_gather_objects((prog.state.epoch, prog.state.batch, prog.state.step), dist)
    if len(set(where)) > 1:
        # Every rank reads the checkpoint itself: on several machines RUN must be shared.
        raise RunError(
            f"the processes resumed from different points (epoch, batch, step per rank: {where}); "
            f"on several machines {s.run_dir} must be on a filesystem that all of them share"
        )
    if len(parts.optimizers) > 1:
        raise ConfigError(
            "objectives with several optimisers do not run under torchrun yet; train them in one process"
        )
    loss_module = parts.loss_module
    persistent = set(loss_module.state_dict())
    sync = any(name in persistent for name, _ in loss_module.named_buffers())
    # Constant buffers (a prior's loc and scale) need no broadcast before every step.
    new_api = (
        "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    )
    buffer_kw: dict[str, Any] = {"forward_sync_buffers" if new_api else "broadcast_buffers": sync}
    device = s.device
    return nn.parallel.DistributedDataParallel(
        loss_module, device_ids=[device.index] if device.type == "cuda" else None, **buffer_kw
    )


def _announce(s: Session, data: TrainingData, parts: Parts) -> None:
    if not s.main:
        return
    dist, ds = s.dist, data.ds
    nparams = sum(p.numel() for p in parts.model.parameters())
    procs = (
        f" x{dist.world_size} (effective batch {data.batch * dist.world_size})"
        if dist.world_size > 1
        else ""
    )

    def scored(name: str, split: Any, scored: Any) -> str:
        if split is None:
            return ""
        part = f" (each epoch scores {len(scored)})" if len(scored) < len(split) else ""
        return f" {name} {len(split)}{part}"

    s.say(
        f"vaekit: {ds.name} {tuple(ds.shape)} train {data.n}"
        f"{scored('valid', ds.valid, data.valid)}{scored('test', ds.test, data.test)} | "
        f"{nparams:,} parameters | {s.device}{procs} | run {s.run_dir}"
    )
    scoring = len(data.test) + (len(data.valid) if data.valid is not None else 0)
    if not s.t.score_limit and s.cfg.data.limit and scoring > data.n:
        # A quick run on few examples spends its epochs scoring whole splits.
        s.say(
            f"note: every epoch scores all {scoring:,} validation and test examples, "
            f"{data.n:,} are trained on (data.limit); --set train.score_limit=N scores a "
            "seeded subset of N of each"
        )


def _open_trackers(s: Session) -> list[Tracker]:
    if not s.main or not s.t.trackers:
        return []
    trackers = open_trackers(list(s.t.trackers), s.run_dir, config_to_dict(s.cfg), s.resume)
    for tracker in trackers:
        if tracker.viewing():
            s.say(f"tracker {tracker.name}: {tracker.viewing()}")
    return trackers


# -- phase 5: one epoch's batches and one training step ------------------------------------------


def _epoch_batches(
    s: Session, data: TrainingData, prog: Progress, epoch: int
) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """``(i, x, y)`` for the batches of ``epoch`` from the position the run stands at; each
    rank takes an equal, disjoint, strided shard of the epoch's order."""
    perm = shard(_epoch_permutation(data.n, s.t.seed, epoch, s.device), s.dist)
    b, first = data.batch, prog.state.batch
    prog.bar = tqdm(
        total=data.steps_per_epoch,
        initial=first,
        desc=f"epoch {epoch}/{s.t.epochs}",
        leave=False,
        disable=not s.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        steps = range(first, data.steps_per_epoch)
        if isinstance(data.train, StreamSplit):
            chunks = [perm[i * b : (i + 1) * b].tolist() for i in steps]
            batches: Iterator[tuple[Tensor, Tensor | None]] = data.train.batches(chunks)
        else:
            train = data.train
            chosen: Iterator[Tensor] = (perm[i * b : (i + 1) * b] for i in steps)
            if data.labelled is not None:
                chosen = _with_labelled(chosen, data.labelled, b, s.t.seed, epoch, first)
            # index_select copies whole rows (x[idx] goes through the general indexing
            # kernel): 21 against 105 us for a batch of 100 MNIST images, the same values.
            sd = data.noise_sd
            batches = (
                (
                    train.x.index_select(0, idx)
                    if sd is None
                    # data.resample: a fresh draw of N(mean, var) every batch, from the
                    # global RNG as dynamic binarization's (a checkpoint holds its state).
                    else torch.normal(train.x.index_select(0, idx), sd.index_select(0, idx)),
                    None if train.y is None else train.y.index_select(0, idx),
                )
                for idx in chosen
            )
        for i, (x, y) in zip(steps, batches, strict=True):
            if data.dynamic:
                x = torch.bernoulli(x)
            yield i, x, y
            prog.bar.update(1)
    finally:
        prog.bar.close()


def _with_labelled(
    chosen: Iterator[Tensor], labelled: Tensor, b: int, seed: int, epoch: int, first: int
) -> Iterator[Tensor]:
    """Each batch's indices with labelled ones added (``data.labels``: Kingma et al. 2014's
    batches mix the two): min(labelled, batch size) of them per step, taken in turn from
    seeded shuffles of the labelled examples, so that a few labels are seen over and over
    and a resumed epoch takes the same ones."""
    per = min(len(labelled), b)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.empty(0, dtype=torch.long)
    for i, idx in enumerate(chosen, start=first):
        need = (i + 1) * per
        while len(order) < need:
            order = torch.cat([order, torch.randperm(len(labelled), generator=gen)])
        extra = labelled[order[i * per : need].to(labelled.device)]
        yield torch.cat([idx, extra.to(idx.device)])


def train_step(
    s: Session,
    data: TrainingData,
    parts: Parts,
    prog: Progress,
    x: Tensor,
    y: Tensor | None,
    epoch: int,
    i: int,
) -> Tensor:
    """Loss, backward (each optimiser's loss into its own parameters), gradient norm, the
    non-finite guard, then the step. Returns the loss."""
    t, ep, state = s.t, prog.epoch, prog.state
    with network_precision(s.compute_dtype):
        loss, terms, losses = parts.step_module(x, y)
    for o in parts.optimizers.values():
        o.zero_grad(set_to_none=True)
    if losses is None:
        loss.backward()
    else:
        for k, ps in parts.groups.items():
            losses[k].backward(inputs=ps, retain_graph=True)
    params = parts.params
    if t.grad_clip > 0:
        norm = nn.utils.clip_grad_norm_(params, t.grad_clip)
    elif t.skip_threshold > 0 or s.dist.world_size > 1:
        norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    else:  # only its finiteness is read
        norm = _squared_norm([p.grad for p in params if p.grad is not None])
    if s.faults:
        s.faults.hit("step")
    # Non-finite guard: one scalar read per step (free on CPU). Under DDP only the
    # all-reduced gradient norm decides, so that every rank takes the same branch.
    finite = bool(torch.isfinite(norm if s.dist.world_size > 1 else loss.detach() + norm))
    # Gradient-norm skipping (VDVAE): a finite but outsized update is dropped.
    outsized = finite and t.skip_threshold > 0 and float(norm) > t.skip_threshold
    if outsized:
        ep.skipped += 1
    elif finite:
        for o in parts.optimizers.values():
            o.step()
        if parts.ema is not None:
            parts.ema.update(parts.model)
        state.step += 1
        # data.labels: the labelled rows each batch adds (_with_labelled puts them last)
        # are not counted, or the epoch's means would weigh the few labels like the rest.
        n = len(x) - (0 if data.labelled is None else min(len(data.labelled), data.batch))
        with torch.no_grad():
            for k, v in terms.items():
                total = (v.detach()[:n] if v.dim() and n < len(v) else v.detach()).sum()
                ep.sums[k] = ep.sums[k] + total if k in ep.sums else total
        ep.count += n
    else:
        guard(s, data, parts, prog, epoch, i, _culprits(s, data, epoch, i, terms))
    state.batch = i + 1
    return loss


def _squared_norm(grads: list[Tensor]) -> Tensor:
    """The gradients' squared norm, accumulated in their dtype: non-finite exactly when
    a gradient is, or when their squares overflow (as the norm's). A BLAS dot product per
    tensor runs on every thread; ``torch._foreach_norm`` on one: 119 against 214 us per
    step for tutorial 002's 1.1 million weights at 2 threads, the whole guard's cost when
    neither train.grad_clip nor train.skip_threshold needs the norm itself.

    Example:
        >>> _squared_norm([torch.tensor([3.0, 4.0]), torch.ones(2, 2)])
        tensor(29.)
    """
    if not grads:
        return torch.zeros(())
    flat = [g.reshape(-1) for g in grads]
    return torch.stack([torch.dot(g, g) for g in flat]).sum()


def _culprits(s: Session, data: TrainingData, epoch: int, i: int, terms: dict[str, Tensor]) -> str:
    """Which per-example terms of a non-finite step are non-finite, and for which training
    examples (rows of ``run.dataset().train``, the split the trainer holds): the same row
    every epoch is one example the model cannot fit, a different one each time is the
    optimisation itself."""
    perm = shard(_epoch_permutation(data.n, s.t.seed, epoch, s.device), s.dist)
    rows = perm[i * data.batch : (i + 1) * data.batch].cpu()
    names: list[str] = []
    bad = torch.zeros(len(rows), dtype=torch.bool)
    for k, v in terms.items():
        if v.dim() != 1 or len(v) != len(rows):
            continue
        finite = torch.isfinite(v.detach()).cpu()
        if not finite.all():
            names.append(k)
            bad |= ~finite
    if not names:
        return "every term finite, the gradient not"
    shown = rows[bad].tolist()
    more = f" and {len(shown) - 8} more" if len(shown) > 8 else ""
    listed = ", ".join(map(str, shown[:8])) + more
    return f"{', '.join(names)} non-finite at training example(s) {listed}"


def guard(
    s: Session,
    data: TrainingData,
    parts: Parts,
    prog: Progress,
    epoch: int,
    i: int,
    culprits: str = "",
) -> None:
    """A step with a non-finite loss or gradient: apply train.nan_policy, or give up."""
    t, ep, state = s.t, prog.epoch, prog.state
    where = f"epoch {epoch} batch {i + 1}/{data.steps_per_epoch}"
    told = f" ({culprits})" if culprits else ""
    ep.bad_steps += 1
    state.bad_steps_total += 1
    hint = _resume_hint(s)
    if t.nan_policy == "stop":
        raise TrainingError(
            f"non-finite loss or gradient at {where} (train.nan_policy=stop){told}. Lower train.lr, "
            f"set train.grad_clip or check the data; the last checkpoint continues with {hint}"
        )
    weights_bad = not all(bool(torch.isfinite(p).all()) for p in parts.params)
    if weights_bad or t.nan_policy == "rollback":
        parts.loss_module.load_state_dict(prog.good["module"])
        for k, o in parts.optimizers.items():
            o.load_state_dict(prog.good["optimizers"][k])
        if parts.ema is not None:
            parts.ema.module.load_state_dict(prog.good["ema"])
        state.lr_scale *= 0.5
        _set_lr(parts.optimizers, _lr(s, prog))
        ep.rollbacks += 1
        what = f"rolled back to the start of the epoch and halved the learning rate (now {_lr(s, prog):g})"
        if weights_bad:
            what = "weights became non-finite: " + what
    else:
        what = "skipped the update"
    s.say(f"warning: {where}: non-finite loss or gradient; {what}{told}", err=True)
    if ep.bad_steps > t.max_bad_steps:
        raise TrainingError(
            f"{ep.bad_steps} non-finite steps in epoch {epoch} (train.max_bad_steps={t.max_bad_steps}): "
            f"training diverged. Lower train.lr (now {_lr(s, prog):g}), set train.grad_clip, "
            "or check the data for NaN; then start a new run, or edit train.lr in "
            f"{s.run_dir / 'config.json'} and continue with {hint}"
        )


# -- phase 6: end of epoch ------------------------------------------------------------------------


def end_of_epoch(
    s: Session,
    data: TrainingData,
    parts: Parts,
    prog: Progress,
    epoch: int,
    start: float,
    train_seconds: float,
) -> dict[str, Any]:
    """Reduce the epoch's sums, evaluate the validation and test splits, keep the best
    weights, print and append the metrics line. Returns the line."""
    dist, ep, state, t = s.dist, prog.epoch, prog.state, s.t
    if ep.skipped and not ep.count:  # no step taken: the run cannot move
        raise TrainingError(
            f"every step of epoch {epoch} was skipped: the gradient norm never fell below "
            f"train.skip_threshold={t.skip_threshold:g}, so no update was applied. Set it well "
            "above the gradient norm of a healthy step (at the start of training too), or 0"
        )
    keys = list(ep.sums)
    count, *totals = all_reduce_sum(
        [torch.tensor(float(ep.count), device=s.device), *ep.sums.values()], dist
    )
    train_terms = {k: float(v) / max(float(count), 1.0) for k, v in zip(keys, totals, strict=True)}
    row: dict[str, Any] = {"epoch": epoch, "step": state.step, "train": train_terms}
    for name, split in (("valid", data.valid), ("test", data.test)):
        if split is None or (name == "test" and not _scores_test(s, parts, prog, epoch, row)):
            continue
        # Each rank evaluates its share of the split; the sums are reduced.
        part = _rank_share(split, dist)
        # The test split's Monte Carlo draws come from a forked stream: whether it is
        # scored (train.score_test) never changes training.
        cuda = [s.device] if s.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda, enabled=name == "test"):
            esums = evaluate_split(parts.scored, parts.objective, part, t.eval_batch_size)
        totals = all_reduce_sum(list(esums.values()), dist)
        row[name] = {k: float(v) / len(split) for k, v in zip(esums, totals, strict=True)}
    # Splits scored on a seeded subset (train.score_limit): how many, so that no reader
    # takes those figures for the whole split's.
    wholes = {"valid": len(data.ds.valid) if data.ds.valid else 0, "test": len(data.ds.test)}
    scored = {
        name: len(split)
        for name, split in (("valid", data.valid), ("test", data.test))
        if split is not None and len(split) < wholes[name]
    }
    if scored:
        row["scored"] = scored
    if ep.skipped:
        row["skipped_steps"] = ep.skipped
    if ep.bad_steps:
        row["nonfinite"] = {
            "bad_steps": ep.bad_steps,
            "rollbacks": ep.rollbacks,
            "lr": _lr(s, prog),
        }
    row["lr"] = _lr(s, prog)
    keep_best = t.keep_best and data.valid is not None
    score = parts.bound.score(row["valid"]) if keep_best else math.nan
    # NaN never counts as best.
    best = math.isfinite(score) and (state.best_score is None or score > state.best_score)
    if best:
        state.best_score, state.best_epoch = score, epoch
    if keep_best:
        row["best_epoch"] = state.best_epoch
    row["train_seconds"] = round(train_seconds, 3)
    row["seconds"] = round(time.perf_counter() - start, 3)
    state.epoch, state.batch, prog.epoch = epoch, 0, EpochProgress()
    prog.good = _snapshot(parts.loss_module, parts.optimizers, parts.ema)
    if s.main:
        bound = parts.bound
        test_txt = f"  test {_fmt(row['test'], bound)}" if "test" in row else ""
        train_txt = _fmt(train_terms, bound, parts.objective.loss_note())
        s.say(f"epoch {epoch:>3}/{t.epochs}  train {train_txt}{test_txt}  [{row['seconds']:.1f}s]")
        if best:
            # Before the metrics row and the checkpoint: a crash in between redoes
            # the epoch, which rewrites the same weights (resume is exact).
            save_weights(
                s.run_dir / BEST_WEIGHTS,
                parts.scored,
                {"epoch": str(epoch), "valid_elbo": repr(state.best_score)},
            )
        with open(s.run_dir / "metrics.jsonl", "a") as f:
            f.write(metrics_line(row))
        if s.faults:
            s.faults.hit("epoch")
    return row


def _scores_test(s: Session, parts: Parts, prog: Progress, epoch: int, row: dict[str, Any]) -> bool:
    """Whether this epoch scores the test split (``train.score_test``): every epoch, or
    the last one of the run (its last epoch, or the one early stopping will end it on)."""
    t, state = s.t, prog.state
    if t.score_test == "epoch" or "valid" not in row or epoch >= t.epochs:
        return True
    if not t.patience:
        return False
    # The early stop that _fit decides after this epoch, from this epoch's valid score.
    score = parts.bound.score(row["valid"])
    improves = math.isfinite(score) and (state.best_score is None or score > state.best_score)
    warmup = warmup_epochs(parts.objective)
    return not improves and epoch - max(state.best_epoch, warmup) >= t.patience


def _rank_share(split: Split | StreamSplit, dist: DistInfo) -> Split | StreamSplit:
    if dist.world_size == 1:
        return split
    if isinstance(split, StreamSplit):
        return split.subset(range(dist.rank, len(split), dist.world_size))
    return Split(
        split.x[dist.rank :: dist.world_size],
        None if split.y is None else split.y[dist.rank :: dist.world_size],
    )


def _checkpoint(s: Session, parts: Parts, prog: Progress) -> Path | None:
    """Gather every rank's RNG states and epoch progress; rank 0 writes (a collective)."""
    ranks = gather_objects({"rng": capture_rng(s.device), **prog.epoch.to_saved()}, s.dist)
    if not s.main or ranks is None:
        return None
    return write_checkpoint(
        s.run_dir,
        parts.model,
        parts.objective,
        parts.optimizers,
        prog.state,
        ranks,
        s.faults,
        ema=None if parts.ema is None else parts.ema.module,
    )


def _interrupted(
    s: Session, stop: GracefulStop, where: str, ckpt: Path | None
) -> TrainingInterrupted:
    msg = (
        f"stopped by {stop.name} {where}; wrote checkpoint {ckpt.name if ckpt else ''}. "
        f"Continue with {_resume_hint(s)}"
    )
    s.say(msg)
    return TrainingInterrupted(msg, ckpt)


def _finish(s: Session, parts: Parts) -> None:
    """Every rank must end with the same weights."""
    dist = s.dist
    write_rank_digest(parts.model, dist.rank)
    if dist.world_size > 1:
        digests = all_gather_objects(weights_digest(parts.model), dist)
        if len(set(digests)) != 1:
            raise TrainingError(
                f"the {dist.world_size} processes ended with different weights: {digests}"
            )
    s.say(f"done: {s.run_dir} (train further with {_resume_hint(s, 'N')})")
