"""The trainer: one loop that reads top to bottom.

config -> device -> data in memory -> model + objective -> optimisers -> new run or
resume -> epochs of [shuffled index batches -> loss -> backward -> non-finite guard ->
step] -> evaluation -> metrics line -> checkpoint.

Exact resume: data order depends only on (seed, epoch), and a checkpoint holds the
weights, optimiser states, learning-rate scale, every rank's RNG states (torch CPU and
CUDA, numpy, Python; dynamic binarization and Monte Carlo samples draw from them) and,
for an interrupted epoch, the position in it and the partial sums. A run resumed from
any checkpoint ends with the same weights and metrics, bit for bit on CPU, as one that
never stopped. SIGINT/SIGTERM finish the current step, write such a checkpoint and say
how to resume.

Non-finite loss or gradients are caught every step (one scalar read) and handled by
``train.nan_policy``: ``skip`` (default) drops the update; ``rollback`` also restores
the state at the start of the epoch and halves the learning rate; ``stop`` ends
training with an error. Weights that have become non-finite are always rolled back.
More than ``train.max_bad_steps`` bad steps in one epoch stop training.

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
import inspect
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vaekit.config import Config, ConfigError, config_to_dict
from vaekit.data import Dataset, Split, data_change, resolve_data_name, training_data
from vaekit.errors import VaekitError
from vaekit.model import VAE, build_model, network_precision
from vaekit.objectives import Objective, build_objective
from vaekit.optim import lr_factor, make_optimizer
from vaekit.rundir import (
    BEST_WEIGHTS,
    RunError,
    atomic_write,
    init_weights,
    objective_abilities,
    read_data_info,
    read_metrics,
    read_run_config,
    run_data,
    run_lock,
    save_weights,
    write_json,
    write_run_files,
)
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


def _epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    # Data order depends only on (seed, epoch): a resumed run sees the same batches.
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


@torch.inference_mode()
def evaluate_split(
    model: VAE, objective: Objective, split: Split, batch_size: int
) -> dict[str, Tensor]:
    """Sum of every per-example term of the objective over a split (tensors on device)."""
    model.eval()
    sums: dict[str, Tensor] = {}
    for i in range(0, len(split), batch_size):
        x = split.x[i : i + batch_size]
        y = None if split.y is None else split.y[i : i + batch_size]
        out = objective(model, x, y)
        for k, v in out.terms.items():
            s = v.detach().sum()
            sums[k] = sums[k] + s if k in sums else s
    model.train()
    return sums


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


def _fmt(terms: dict[str, float]) -> str:
    main = f"{terms.get('loss', float('nan')):.3f}"
    parts = [f"{k} {v:.3f}" for k, v in terms.items() if k not in ("loss", "elbo")]
    return f"{main} ({', '.join(parts)})" if parts else main


def _seed_everything(seed: int) -> None:
    # Parts may draw from numpy's or Python's global RNG too; checkpoints save all three.
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _snapshot(module: nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    return {
        "module": copy.deepcopy(module.state_dict()),
        "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in optimizers.items()},
    }


def _set_lr(optimizers: dict[str, torch.optim.Optimizer], lr: float) -> None:
    for o in optimizers.values():
        for g in o.param_groups:
            g["lr"] = lr


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _load_data(
    cfg: Config,
    data_dir: str | None,
    resumed: tuple[Path, dict[str, Any] | None] | None = None,
    allow_changed: bool = False,
) -> Dataset:
    """The training data (a resumed run's: ``resumed`` is its directory and model.json's
    data section, checked against the data found now) and the checks they allow."""
    if resumed is None:
        ds = training_data(cfg.data, cfg.train.seed, data_dir_=data_dir)
    else:
        run_dir, info = resumed
        ds = run_data(
            run_dir,
            cfg,
            info,
            data_dir=data_dir,
            allow_changed=allow_changed,
            moved_hint=f"move them back, or set data.name in {run_dir / 'config.json'} to "
            "where they are now (they are checked to be the same data)",
        )
    _check_likelihood_fits(cfg.model.likelihood.name, ds)
    m = cfg.model
    if m.conditional and ds.num_classes < 2 and not m.num_classes:
        raise ConfigError(f"model.conditional=true needs labels, but dataset {ds.name} has none")
    if m.conditional and m.num_classes and ds.num_classes > m.num_classes:
        raise ConfigError(
            f"model.num_classes={m.num_classes}, but dataset {ds.name} has labels 0..{ds.num_classes - 1}: "
            f"set model.num_classes={ds.num_classes} (or 0 to take it from the data)"
        )
    return ds


def _check_likelihood_fits(name: str, ds: Dataset) -> None:
    """The likelihood must fit the data's kind (its abilities say which kinds it fits)."""
    from vaekit.registry import LIKELIHOODS

    if ds.kind in LIKELIHOODS.get(name).abilities.fits:
        return
    fitting = [p.abilities.advice or p.name for p in LIKELIHOODS if ds.kind in p.abilities.exact]
    what = {
        "real": "values outside [0, 1]",
        "grey": "grey levels in [0, 1]",
        "binary": "binary values",
    }[ds.kind]
    raise ConfigError(
        f"dataset {ds.name} has {what}, which model.likelihood={name} does not model; use one "
        f"that does: {'; '.join(fitting)}"
    )


def _build(cfg: Config, ds: Dataset, device: torch.device) -> _LossModule:
    """Model + objective on the device; a config that cannot be built is a ConfigError."""
    try:
        model = build_model(cfg.model, ds.shape, ds.num_classes).to(device)
        objective = build_objective(cfg.objective).to(device)
    except (ValueError, RuntimeError, MemoryError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(
            f"cannot build the model of this config for {ds.name} {tuple(ds.shape)}: {_first_line(e)}"
        ) from None
    return _LossModule(model, objective)


def _check_one_batch(
    loss_module: _LossModule, split: Split, ds: Dataset, device: torch.device
) -> None:
    """Run a copy of the model on two examples, so that a model that cannot take this data
    fails with a clear message before anything is written (RNG streams untouched)."""
    probe = copy.deepcopy(loss_module).eval()
    x = split.x[:2]
    y = None if split.y is None else split.y[:2]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        try:
            probe(x, y)
        except (ValueError, RuntimeError, NotImplementedError, MemoryError) as e:
            raise ConfigError(
                f"the model of this config cannot process {ds.name} examples of shape {tuple(ds.shape)}: {_first_line(e)}"
            ) from None


def _truncate_metrics(run_dir: Path, epoch: int) -> None:
    """Drop metric lines of epochs after the checkpoint we resume from (and a torn last line)."""
    rows = [r for r in read_metrics(run_dir) if int(r.get("epoch", 0)) <= epoch]
    with atomic_write(run_dir / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _resume_hint(run_dir: Path, dist: DistInfo) -> str:
    if dist.world_size > 1:
        return f"torchrun --nproc_per_node={dist.world_size} -m vaekit train --resume {run_dir}"
    return f"vaekit train --resume {run_dir}"


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


def fit(
    cfg: Config | None,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    epochs: int | None = None,
    data_dir: str | None = None,
    progress: bool | None = None,
    log: Any = None,
    patience: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    allow_changed_data: bool = False,
) -> list[dict[str, Any]]:
    """Train (or resume) a run and return its metrics, one dict per epoch.

    Under torchrun this runs DistributedDataParallel; the effective batch is
    ``train.batch_size`` times the number of processes (see the module docstring).
    Raises :class:`TrainingInterrupted` (a KeyboardInterrupt) after SIGINT/SIGTERM once
    a checkpoint is written, and :class:`TrainingError` when training diverges.
    ``epochs``, ``patience``, ``threads`` and ``device`` replace those ``train.*`` settings
    (on resume too: the run's config.json records the new values). A resumed run is
    bit-identical to an uninterrupted one at the same thread count and device; another
    thread count changes the order of floating-point sums, so only the last bits, and
    another device (a CPU run continued on a GPU) its random draws as well. A resumed run
    whose data changed since it was trained is refused unless ``allow_changed_data``.

    Example:
        >>> from vaekit.config import load_config
        >>> cfg = load_config(None, ["train.epochs=1"])        # doctest: +SKIP
        >>> fit(cfg, "runs/demo")[-1]["test"]["loss"]          # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    log = log or sys.stdout
    dist = setup_distributed()
    try:
        changes = {"epochs": epochs, "patience": patience, "threads": threads, "device": device}
        with contextlib.ExitStack() as held:
            history = _fit(
                cfg,
                run_dir,
                resume,
                changes,
                data_dir,
                progress,
                log,
                dist,
                held,
                allow_changed_data,
            )
    except TrainingInterrupted:
        teardown_distributed(dist)  # every rank stopped at the same agreed point
        raise
    except BaseException:
        teardown_distributed(dist, ok=False)
        raise
    teardown_distributed(dist)
    return history


def _fit(
    cfg: Config | None,
    run_dir: Path,
    resume: bool,
    changes: dict[str, int | str | None],
    data_dir: str | None,
    progress: bool | None,
    log: Any,
    dist: DistInfo,
    held: contextlib.ExitStack,
    allow_changed_data: bool = False,
) -> list[dict[str, Any]]:
    # One trainer per run directory, held until fit() returns: a second `train --out RUN`
    # or `--resume RUN` is refused here, before it reads or writes anything of the run.
    held.enter_context(_hold_run_dir(run_dir, dist, create=not resume))
    # -- config ------------------------------------------------------------------------------
    if resume:
        cfg = read_run_config(run_dir)
    if cfg is None:
        raise ConfigError("fit() needs a config, or resume=True with a run directory")
    if not resume:
        # config.json records the data's absolute path: the run works from any directory.
        cfg = replace(cfg, data=replace(cfg.data, name=resolve_data_name(cfg.data.name)))
    # Settings a resume may change (train.epochs / patience / threads / device).
    changed = False
    for key, value in changes.items():
        if value is not None and value != getattr(cfg.train, key):
            setattr(cfg.train, key, value)
            changed = True
    if changed:
        cfg.validate()
    t = cfg.train
    bound = objective_abilities(cfg)
    main_rank = dist.rank == 0
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device, dist)
    compute_dtype = torch.bfloat16 if t.precision == "bf16" else None
    if compute_dtype is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"train.precision=bf16 needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
            "has none: use train.precision=fp32"
        )
    faults = FaultInjector.from_env()

    # -- data: every split a tensor on the device; batches are index slices ----------------
    saved_data = read_data_info(run_dir) if resume else None
    ds = _load_data(cfg, data_dir, (run_dir, saved_data) if resume else None, allow_changed_data)
    train, test, valid = (
        ds.train.to(device),
        ds.test.to(device),
        ds.valid.to(device) if ds.valid else None,
    )
    dynamic = cfg.data.binarize == "dynamic"
    keep_best = t.keep_best and valid is not None
    if t.patience and valid is None:
        raise ConfigError(
            f"train.patience={t.patience} stops on the validation score, but {ds.name} has no "
            "validation split; set data.valid_fraction (e.g. 0.1) or train.patience=0"
        )
    n = len(train)
    per_rank = n // dist.world_size
    if per_rank == 0:
        raise ConfigError(
            f"{n} training examples cannot be shared among {dist.world_size} processes; raise data.limit"
        )
    batch = t.batch_size
    steps_per_epoch = math.ceil(per_rank / batch)

    # -- model, objective, optimisers --------------------------------------------------------
    _seed_everything(t.seed + dist.rank)
    loss_module = _build(cfg, ds, device)
    model, objective = loss_module.model, loss_module.objective
    if t.init:  # another run's weights to start from (a second stage); a checkpoint overrides
        init_weights(model, t.init)
    warmup = objective.warmup_epochs
    # Estimators that weigh a minibatch against the whole data (total correlation) need N.
    objective.set_dataset_size(len(ds.train))
    _check_one_batch(loss_module, train, ds, device)
    groups = objective.param_groups(model)
    optimizers = {
        k: make_optimizer(t.optimizer, ps, t.lr, t.weight_decay, device) for k, ps in groups.items()
    }
    all_params = [p for ps in groups.values() for p in ps]

    # -- run directory: a new run, or the newest good checkpoint of an old one -------------
    state, ep = TrainState(), EpochProgress()
    if resume:
        if main_rank:
            remove_partial_writes(run_dir)
        loaded = read_checkpoint(
            run_dir,
            model,
            objective,
            optimizers,
            rank=dist.rank,
            world_size=dist.world_size,
            device=device,
            warn=main_rank,
        )
        if loaded is None:
            # Killed before its first checkpoint: start again from the beginning.
            if main_rank:
                print(f"{run_dir} has no checkpoint yet; training it from the beginning", file=log)
                write_run_files(run_dir, cfg, ds.info())
        else:
            state, mine, ckpt = loaded
            if mine is None:
                # Written by a different number of processes: continue with fresh, distinct streams.
                _seed_everything(t.seed + dist.rank + 7919 * (state.epoch + 1))
                if main_rank:
                    print(
                        f"warning: {ckpt.name} was written by a different number of processes; "
                        "the random streams are re-seeded, so the run is no longer bit-reproducible",
                        file=sys.stderr,
                    )
            elif state.batch:
                ep = EpochProgress.from_saved(mine, device)
            if main_rank:
                print(f"resuming {run_dir} from {ckpt.name}", file=log)
        if main_rank:
            _truncate_metrics(run_dir, state.epoch)
        if state.epoch < t.epochs and _patience_spent(state, t.patience, warmup):
            if main_rank:
                print(
                    f"{run_dir} {_early_stop_text(state, t.patience)}; pass --patience N with "
                    f"N > {state.epoch - max(state.best_epoch, warmup)} (or 0, off) to train further",
                    file=log,
                )
            return read_metrics(run_dir)
        if state.epoch >= t.epochs:
            if main_rank:
                print(
                    f"{run_dir} already has {state.epoch} epochs; pass --epochs N with N > {state.epoch} to train further",
                    file=log,
                )
            return read_metrics(run_dir)
        if main_rank and changed:
            # config.json records the new settings, so a later plain --resume keeps them.
            write_json(run_dir / "config.json", config_to_dict(cfg))
        assert ds.fingerprint is not None
        if main_rank and data_change((saved_data or {}).get("fingerprint"), ds.fingerprint):
            # Allowed by allow_changed_data: from here on the run trains on these data.
            print(
                f"warning: {run_dir}: training goes on with changed data (--allow-changed-data); "
                "model.json now records them",
                file=sys.stderr,
            )
            write_run_files(run_dir, cfg, ds.info())
    else:
        ckdir = run_dir / "checkpoints"
        if ckdir.is_dir() and any(ckdir.iterdir()):
            raise RunError(
                f"{run_dir} already holds a run; continue it with `vaekit train --resume {run_dir}` or choose another --out"
            )
        if main_rank:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_files(run_dir, cfg, ds.info())
            (run_dir / "metrics.jsonl").write_text("")

    def current_lr() -> float:
        """train.lr x the NaN-recovery scale x the schedule's factor for the epoch in progress."""
        return t.lr * state.lr_scale * lr_factor(t.lr_schedule, state.epoch + 1, t.epochs)

    _set_lr(optimizers, current_lr())

    step_module: nn.Module = loss_module
    if dist.world_size > 1:
        where = all_gather_objects((state.epoch, state.batch, state.step), dist)
        if len(set(where)) > 1:
            # Every rank reads the checkpoint itself: on several machines RUN must be shared.
            raise RunError(
                f"the processes resumed from different points (epoch, batch, step per rank: {where}); "
                f"on several machines {run_dir} must be on a filesystem that all of them share"
            )
        if len(optimizers) > 1:
            raise ConfigError(
                "objectives with several optimisers do not run under torchrun yet; train them in one process"
            )
        persistent = set(loss_module.state_dict())
        sync = any(name in persistent for name, _ in loss_module.named_buffers())
        # Constant buffers (a prior's loc and scale) need no broadcast before every step.
        new_api = (
            "forward_sync_buffers"
            in inspect.signature(nn.parallel.DistributedDataParallel).parameters
        )
        buffer_kw: dict[str, Any] = {
            "forward_sync_buffers" if new_api else "broadcast_buffers": sync
        }
        step_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None, **buffer_kw
        )

    if progress is None:
        progress = main_rank and sys.stderr.isatty()
    if main_rank:
        nparams = sum(p.numel() for p in model.parameters())
        procs = (
            f" x{dist.world_size} (effective batch {batch * dist.world_size})"
            if dist.world_size > 1
            else ""
        )
        valid_txt = f" valid {len(valid)}" if valid is not None else ""
        print(
            f"vaekit: {ds.name} {tuple(ds.shape)} train {n}{valid_txt} test {len(test)} | "
            f"{nparams:,} parameters | {device}{procs} | run {run_dir}",
            file=log,
            flush=True,
        )

    def checkpoint() -> Path | None:
        """Gather every rank's RNG states and epoch progress; rank 0 writes (a collective)."""
        ranks = gather_objects({"rng": capture_rng(device), **ep.to_saved()}, dist)
        if not main_rank or ranks is None:
            return None
        return write_checkpoint(run_dir, model, objective, optimizers, state, ranks, faults)

    def interrupted(where: str, ckpt: Path | None) -> TrainingInterrupted:
        msg = (
            f"stopped by {stop.name} {where}; wrote checkpoint {ckpt.name if ckpt else ''}. "
            f"Continue with `{_resume_hint(run_dir, dist)}`"
        )
        if main_rank:
            print(msg, file=log, flush=True)
        return TrainingInterrupted(msg, ckpt)

    good = _snapshot(loss_module, optimizers)  # the state at the start of the epoch

    def recover(epoch: int, batch_index: int) -> None:
        """A step with a non-finite loss or gradient: apply train.nan_policy, or give up."""
        where = f"epoch {epoch} batch {batch_index + 1}/{steps_per_epoch}"
        ep.bad_steps += 1
        state.bad_steps_total += 1
        resume_hint = _resume_hint(run_dir, dist)
        if t.nan_policy == "stop":
            raise TrainingError(
                f"non-finite loss or gradient at {where} (train.nan_policy=stop). Lower train.lr, "
                f"set train.grad_clip or check the data; the last checkpoint continues with `{resume_hint}`"
            )
        weights_bad = not all(bool(torch.isfinite(p).all()) for p in all_params)
        if weights_bad or t.nan_policy == "rollback":
            loss_module.load_state_dict(good["module"])
            for k, o in optimizers.items():
                o.load_state_dict(good["optimizers"][k])
            state.lr_scale *= 0.5
            _set_lr(optimizers, current_lr())
            ep.rollbacks += 1
            what = f"rolled back to the start of the epoch and halved the learning rate (now {current_lr():g})"
            if weights_bad:
                what = "weights became non-finite: " + what
        else:
            what = "skipped the update"
        if main_rank:
            print(f"warning: {where}: non-finite loss or gradient; {what}", file=sys.stderr)
        if ep.bad_steps > t.max_bad_steps:
            raise TrainingError(
                f"{ep.bad_steps} non-finite steps in epoch {epoch} (train.max_bad_steps={t.max_bad_steps}): "
                f"training diverged. Lower train.lr (now {current_lr():g}), set train.grad_clip, "
                "or check the data for NaN; then start a new run, or edit train.lr in "
                f"{run_dir / 'config.json'} and continue with `{resume_hint}`"
            )

    # -- the loop ----------------------------------------------------------------------------
    history = read_metrics(run_dir) if main_rank else []
    from tqdm import tqdm

    with GracefulStop(escalate=dist.world_size == 1) as stop:
        while state.epoch < t.epochs:
            epoch = state.epoch + 1
            start = time.perf_counter()
            _set_lr(optimizers, current_lr())
            # Schedules (KL warm-up, a posterior's temperature) read the epoch here.
            _set_epoch(model, objective, epoch)
            # Each rank takes an equal, disjoint, strided shard of this epoch's order.
            perm = shard(_epoch_permutation(n, t.seed, epoch, device), dist)
            bar = tqdm(
                total=steps_per_epoch,
                initial=state.batch,
                desc=f"epoch {epoch}/{t.epochs}",
                leave=False,
                disable=not progress,
                file=sys.stderr,
                dynamic_ncols=True,
            )
            for i in range(state.batch, steps_per_epoch):
                idx = perm[i * batch : (i + 1) * batch]
                x = train.x[idx]
                y = None if train.y is None else train.y[idx]
                if dynamic:
                    x = torch.bernoulli(x)
                with network_precision(compute_dtype):
                    loss, terms, losses = step_module(x, y)
                for o in optimizers.values():
                    o.zero_grad(set_to_none=True)
                if losses is None:
                    loss.backward()
                else:
                    for k, ps in groups.items():
                        losses[k].backward(inputs=ps, retain_graph=True)
                if t.grad_clip > 0:
                    norm = nn.utils.clip_grad_norm_(all_params, t.grad_clip)
                else:
                    norm = nn.utils.get_total_norm(
                        [p.grad for p in all_params if p.grad is not None]
                    )
                if faults:
                    faults.hit("step")
                # Non-finite guard: one scalar read per step (free on CPU). Under DDP only the
                # all-reduced gradient norm decides, so that every rank takes the same branch.
                finite = bool(torch.isfinite(norm if dist.world_size > 1 else loss.detach() + norm))
                if finite:
                    for o in optimizers.values():
                        o.step()
                    state.step += 1
                    with torch.no_grad():
                        for k, v in terms.items():
                            s = v.detach().sum()
                            ep.sums[k] = ep.sums[k] + s if k in ep.sums else s
                    ep.count += len(idx)
                else:
                    recover(epoch, i)
                state.batch = i + 1
                bar.update(1)
                if progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                # A stop request mid-epoch: checkpoint the position and partial sums.
                if (
                    state.batch < steps_per_epoch
                    and (dist.world_size == 1 or state.batch % STOP_SYNC_EVERY == 0)
                    and any_rank(stop.requested, dist, device)
                ):
                    bar.close()
                    raise interrupted(
                        f"at epoch {epoch}, batch {state.batch}/{steps_per_epoch}", checkpoint()
                    )
            bar.close()
            train_seconds = time.perf_counter() - start

            # -- end of epoch: reduce, evaluate, log, checkpoint ------------------------------
            keys = list(ep.sums)
            count, *totals = all_reduce_sum(
                [torch.tensor(float(ep.count), device=device), *ep.sums.values()], dist
            )
            train_terms = {
                k: float(v) / max(float(count), 1.0) for k, v in zip(keys, totals, strict=True)
            }
            row: dict[str, Any] = {"epoch": epoch, "step": state.step, "train": train_terms}
            for name, split in (("valid", valid), ("test", test)):
                if split is None:
                    continue
                # Each rank evaluates its share of the split; the sums are reduced.
                part = Split(
                    split.x[dist.rank :: dist.world_size],
                    None if split.y is None else split.y[dist.rank :: dist.world_size],
                )
                esums = evaluate_split(model, objective, part, t.eval_batch_size)
                totals = all_reduce_sum(list(esums.values()), dist)
                row[name] = {k: float(v) / len(split) for k, v in zip(esums, totals, strict=True)}
            if ep.bad_steps:
                row["nonfinite"] = {
                    "bad_steps": ep.bad_steps,
                    "rollbacks": ep.rollbacks,
                    "lr": current_lr(),
                }
            row["lr"] = current_lr()
            score = bound.score(row["valid"]) if keep_best else math.nan
            # NaN never counts as best.
            best = math.isfinite(score) and (state.best_score is None or score > state.best_score)
            if best:
                state.best_score, state.best_epoch = score, epoch
            if keep_best:
                row["best_epoch"] = state.best_epoch
            row["train_seconds"] = round(train_seconds, 3)
            row["seconds"] = round(time.perf_counter() - start, 3)
            state.epoch, state.batch, ep = epoch, 0, EpochProgress()
            good = _snapshot(loss_module, optimizers)
            if main_rank:
                test_txt = f"  test {_fmt(row['test'])}" if "test" in row else ""
                print(
                    f"epoch {epoch:>3}/{t.epochs}  train {_fmt(train_terms)}{test_txt}  [{row['seconds']:.1f}s]",
                    file=log,
                    flush=True,
                )
                if best:
                    # Before the metrics row and the checkpoint: a crash in between redoes
                    # the epoch, which rewrites the same weights (resume is exact).
                    save_weights(
                        run_dir / BEST_WEIGHTS,
                        model,
                        {"epoch": str(epoch), "valid_elbo": repr(state.best_score)},
                    )
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                history.append(row)
                if faults:
                    faults.hit("epoch")
            stopping = any_rank(stop.requested, dist, device)
            # Every rank holds the same reduced validation score, so all stop together.
            # (patience > 0 implies keep_best and a validation split: checked above.)
            early = _patience_spent(state, t.patience, warmup)
            written = None
            if epoch % t.checkpoint_every == 0 or epoch == t.epochs or stopping or early:
                written = checkpoint()
            if stopping and epoch < t.epochs:
                raise interrupted(f"after epoch {epoch}", written)
            if early and epoch < t.epochs:
                if main_rank:
                    print(
                        f"early stop: {_early_stop_text(state, t.patience)}; "
                        f"the best weights are in {run_dir / BEST_WEIGHTS}",
                        file=log,
                    )
                break

    # -- the end: every rank must hold the same weights ------------------------------------
    write_rank_digest(model, dist.rank)
    if dist.world_size > 1:
        digests = all_gather_objects(weights_digest(model), dist)
        if len(set(digests)) != 1:
            raise TrainingError(
                f"the {dist.world_size} processes ended with different weights: {digests}"
            )
    if main_rank:
        print(
            f"done: {run_dir} (train further with `{_resume_hint(run_dir, dist)} --epochs N`)",
            file=log,
        )
    return history
