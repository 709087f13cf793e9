"""The trainer: one loop that reads top to bottom.

device -> data in memory -> model + objective -> optimisers -> (resume) -> epochs of
[shuffled index batches -> loss -> backward -> non-finite guard -> step] -> evaluation
-> metrics line -> checkpoint. Under ``torchrun`` it runs DistributedDataParallel: each
rank takes its shard of every epoch, metrics are reduced across ranks, and only rank 0
prints and writes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import Config, ConfigError, config_from_dict
from vaekit.data import Dataset, Split, load_dataset
from vaekit.model import VAE, build_model
from vaekit.objectives import Objective, build_objective
from vaekit.rundir import (
    RunError,
    atomic_write,
    latest_checkpoint,
    load_weights,
    read_metrics,
    save_weights,
    write_run_files,
)
from vaekit.train.distributed import DistInfo, all_reduce_sum, setup_distributed, teardown_distributed

__all__ = ["TrainingError", "fit", "evaluate_split", "make_optimizer", "resolve_device"]

KEEP_CHECKPOINTS = 2


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


def resolve_device(name: str, dist: DistInfo | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
        if dist is not None and dist.world_size > 1 and name == "cuda":
            name = f"cuda:{dist.local_rank}"
    return torch.device(name)


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    # foreach kernels batch the per-parameter updates into a few calls: faster on CPU and GPU.
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "rmsprop":
        # Keras' RMSprop defaults (rho=0.9, eps=1e-7), as in tutorial 001.
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=weight_decay, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, foreach=True)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, foreach=True)
    raise ConfigError(f"unknown optimizer {name!r}")


class _LossModule(nn.Module):
    """Model + objective as one module, so DDP sees a forward() it can hook."""

    def __init__(self, model: VAE, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor] | None]:
        out = self.objective(self.model, x, y)
        return out.loss, out.terms, out.losses


@dataclass
class _State:
    epoch: int = 0  # epochs completed
    step: int = 0
    lr_scale: float = 1.0
    bad_steps_total: int = 0


def _epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    # Data order depends only on (seed, epoch): a resumed run sees the same batches.
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


@torch.inference_mode()
def evaluate_split(model: VAE, objective: Objective, split: Split, batch_size: int) -> dict[str, Tensor]:
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


def _fmt(terms: dict[str, float]) -> str:
    main = f"{terms.get('loss', float('nan')):.3f}"
    parts = [f"{k} {v:.3f}" for k, v in terms.items() if k not in ("loss", "elbo")]
    return f"{main} ({', '.join(parts)})" if parts else main


def _snapshot(module: nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    return {
        "module": copy.deepcopy(module.state_dict()),
        "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in optimizers.items()},
    }


def _write_checkpoint(run_dir: Path, loss_module: _LossModule, optimizers: dict[str, torch.optim.Optimizer], state: _State, metrics_row: dict[str, Any]) -> None:
    """Write checkpoints/epoch-NNNN atomically (a temp folder renamed into place), then prune."""
    root = run_dir / "checkpoints"
    final = root / f"epoch-{state.epoch:04d}"
    tmp = root / f".tmp-epoch-{state.epoch:04d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    meta = {"epoch": str(state.epoch), "step": str(state.step)}
    save_weights(tmp / "model.safetensors", loss_module.model, meta)
    if any(True for _ in loss_module.objective.state_dict()):
        save_weights(tmp / "objective.safetensors", loss_module.objective, meta)
    trainer_state = {
        "epoch": state.epoch,
        "step": state.step,
        "lr_scale": state.lr_scale,
        "bad_steps_total": state.bad_steps_total,
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "metrics": json.dumps(metrics_row),
    }
    with atomic_write(tmp / "trainer_state.pt") as f:
        torch.save(trainer_state, f)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    # The user-facing weights: the latest good checkpoint's, also written atomically.
    save_weights(run_dir / "model.safetensors", loss_module.model, meta)
    for old in sorted(root.glob("epoch-[0-9]*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(run_dir: Path, loss_module: _LossModule, optimizers: dict[str, torch.optim.Optimizer]) -> _State:
    """Restore the newest readable checkpoint; a corrupt one falls back to the one before."""
    ckpts = sorted((run_dir / "checkpoints").glob("epoch-[0-9]*"), reverse=True)
    if not ckpts:
        raise RunError(f"{run_dir}: no checkpoint to resume from (checkpoints/ is empty); start a new run instead")
    errors = []
    for ckpt in ckpts:
        try:
            load_weights(ckpt / "model.safetensors", loss_module.model)
            if (ckpt / "objective.safetensors").is_file():
                load_weights(ckpt / "objective.safetensors", loss_module.objective)
            try:
                ts = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
            except Exception as e:  # unpickling errors come in many types
                raise RunError(f"{ckpt / 'trainer_state.pt'}: cannot read trainer state ({type(e).__name__}: {e})") from None
            for k, o in optimizers.items():
                o.load_state_dict(ts["optimizers"][k])
            torch.set_rng_state(ts["rng_cpu"])
            if ts["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ts["rng_cuda"])
            if errors:
                print(f"warning: {errors[-1]}; resumed from the previous checkpoint {ckpt.name}", file=sys.stderr)
            return _State(int(ts["epoch"]), int(ts["step"]), float(ts["lr_scale"]), int(ts["bad_steps_total"]))
        except (RunError, KeyError) as e:
            errors.append(str(e))
    raise RunError(f"{run_dir}: every checkpoint is unreadable: " + "; ".join(errors))


def _truncate_metrics(run_dir: Path, epoch: int) -> None:
    """Drop metric lines of epochs after the checkpoint we resume from."""
    rows = [r for r in read_metrics(run_dir) if int(r.get("epoch", 0)) <= epoch]
    with atomic_write(run_dir / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _load_data(cfg: Config, data_dir: str | None) -> Dataset:
    ds = load_dataset(cfg.data.name, data_dir_=data_dir, binarization=cfg.data.binarize, seed=cfg.train.seed)
    if cfg.data.limit:
        ds.train = ds.train.take(cfg.data.limit)
    if cfg.model.likelihood == "bernoulli" and ds.kind == "real":
        raise ConfigError(
            f"dataset {ds.name} has values outside [0, 1]; a Bernoulli likelihood needs data in [0, 1]: "
            "use model.likelihood=gaussian"
        )
    if cfg.model.conditional and ds.num_classes < 2 and not cfg.model.num_classes:
        raise ConfigError(f"model.conditional=true needs labels, but dataset {ds.name} has none")
    return ds


def fit(
    cfg: Config | None,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    epochs: int | None = None,
    data_dir: str | None = None,
    progress: bool | None = None,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Train (or resume) a run and return its metrics, one dict per epoch.

    Example:
        >>> from vaekit.config import load_config
        >>> cfg = load_config(None, ["train.epochs=1"])        # doctest: +SKIP
        >>> fit(cfg, "runs/demo")[-1]["test"]["loss"]          # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    log = log or sys.stdout
    dist = setup_distributed()
    try:
        return _fit(cfg, run_dir, resume, epochs, data_dir, progress, log, dist)
    finally:
        teardown_distributed(dist)


def _fit(cfg: Config | None, run_dir: Path, resume: bool, epochs: int | None, data_dir: str | None, progress: bool | None, log: Any, dist: DistInfo) -> list[dict[str, Any]]:
    # -- config ------------------------------------------------------------------------------
    if resume:
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise RunError(f"cannot resume {run_dir}: it has no config.json (is it a vaekit run directory?)")
        cfg = config_from_dict(json.loads(cfg_path.read_text()))
    assert cfg is not None
    if epochs is not None:
        cfg.train.epochs = epochs
        cfg.validate()
    t = cfg.train
    main_rank = dist.rank == 0
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device, dist)
    torch.manual_seed(t.seed + dist.rank)

    # -- data: every split a tensor on the device; batches are index slices ----------------
    ds = _load_data(cfg, data_dir)
    train, test, valid = ds.train.to(device), ds.test.to(device), ds.valid.to(device) if ds.valid else None
    dynamic = cfg.data.binarize == "dynamic"

    # -- model, objective, optimisers --------------------------------------------------------
    model = build_model(cfg.model, ds.shape, ds.num_classes).to(device)
    objective = build_objective(cfg.objective).to(device)
    loss_module = _LossModule(model, objective)
    groups = objective.param_groups(model)
    optimizers = {k: make_optimizer(t.optimizer, ps, t.lr, t.weight_decay, device) for k, ps in groups.items()}
    all_params = [p for ps in groups.values() for p in ps]

    state = _State()
    if resume:
        state = _load_checkpoint(run_dir, loss_module, optimizers)
        if main_rank:
            _truncate_metrics(run_dir, state.epoch)
        if state.epoch >= t.epochs:
            print(f"{run_dir} already has {state.epoch} epochs; pass --epochs N with N > {state.epoch} to train further", file=log)
            return read_metrics(run_dir)
        # RNG streams of other ranks differ by rank; rank 0's state was saved.
        if dist.rank:
            torch.manual_seed(t.seed + dist.rank + 7919 * state.epoch)
    elif main_rank:
        if (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
            raise RunError(f"{run_dir} already holds a run; continue it with `vaekit train --resume {run_dir}` or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_files(run_dir, cfg, ds.info())
        (run_dir / "metrics.jsonl").write_text("")
    for o in optimizers.values():
        for g in o.param_groups:
            g["lr"] = t.lr * state.lr_scale

    step_module: nn.Module = loss_module
    if dist.world_size > 1:
        if len(optimizers) > 1:
            raise ConfigError("objectives with several optimisers do not run under torchrun yet; train them in one process")
        step_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)

    if progress is None:
        progress = main_rank and sys.stderr.isatty()
    if main_rank:
        nparams = sum(p.numel() for p in model.parameters())
        print(
            f"vaekit: {ds.name} {tuple(ds.shape)} train {len(train)} test {len(test)} | "
            f"{nparams:,} parameters | {device}{f' x{dist.world_size}' if dist.world_size > 1 else ''} | run {run_dir}",
            file=log,
        )

    # -- the loop ----------------------------------------------------------------------------
    good = _snapshot(loss_module, optimizers)
    n = len(train)
    per_rank = n // dist.world_size
    batch = t.batch_size
    steps_per_epoch = math.ceil(per_rank / batch)
    history = read_metrics(run_dir) if main_rank else []
    from tqdm import tqdm

    while state.epoch < t.epochs:
        epoch = state.epoch + 1
        start = time.perf_counter()
        # Objectives with schedules (KL warm-up) read the epoch here.
        objective.set_epoch(epoch)
        perm = _epoch_permutation(n, t.seed, epoch, device)
        # Each rank takes an equal, disjoint shard of this epoch's order.
        perm = perm[dist.rank : per_rank * dist.world_size : dist.world_size]
        sums: dict[str, Tensor] = {}
        count = 0
        bad_in_row = 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{t.epochs}", leave=False, disable=not progress, file=sys.stderr, dynamic_ncols=True)
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            x = train.x[idx]
            y = None if train.y is None else train.y[idx]
            if dynamic:
                x = torch.bernoulli(x)
            loss, terms, losses = step_module(x, y)
            for o in optimizers.values():
                o.zero_grad(set_to_none=True)
            if losses is None:
                loss.backward()
            else:
                for k, ps in groups.items():
                    losses[k].backward(inputs=ps, retain_graph=True)
            grads = [p.grad for p in all_params if p.grad is not None]
            if t.grad_clip > 0:
                norm = nn.utils.clip_grad_norm_(all_params, t.grad_clip)
            else:
                norm = nn.utils.get_total_norm(grads)
            # Non-finite guard: one scalar read per step (free on CPU).
            if not bool(torch.isfinite(loss.detach() + norm)):
                bad_in_row += 1
                state.bad_steps_total += 1
                weights_bad = not all(bool(torch.isfinite(p).all()) for p in all_params)
                if weights_bad:
                    loss_module.load_state_dict(good["module"])
                    for k, o in optimizers.items():
                        o.load_state_dict(good["optimizers"][k])
                    state.lr_scale *= 0.5
                    for o in optimizers.values():
                        for g in o.param_groups:
                            g["lr"] = t.lr * state.lr_scale
                if main_rank:
                    what = "weights became non-finite: rolled back to the last good state and halved the learning rate" if weights_bad else "skipped the update"
                    print(f"warning: epoch {epoch} step {i + 1}: non-finite loss or gradient; {what}", file=sys.stderr)
                if bad_in_row > t.max_bad_steps:
                    raise TrainingError(
                        f"{bad_in_row} non-finite steps in a row at epoch {epoch}: training diverged. "
                        f"Lower train.lr (now {t.lr * state.lr_scale:g}), set train.grad_clip, or check the data for NaN; "
                        f"resume from the last checkpoint with `vaekit train --resume {run_dir}`"
                    )
                bar.update(1)
                continue
            bad_in_row = 0
            for o in optimizers.values():
                o.step()
            state.step += 1
            with torch.no_grad():
                for k, v in terms.items():
                    s = v.detach().sum()
                    sums[k] = sums[k] + s if k in sums else s
            count += len(idx)
            bar.update(1)
            if progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                bar.set_postfix(loss=f"{float(loss):.3f}")
        bar.close()

        # -- end of epoch: reduce, evaluate, log, checkpoint ----------------------------------
        counts = torch.tensor([float(count)], device=device)
        all_reduce_sum([counts, *sums.values()], dist)
        train_terms = {k: float(v) / max(float(counts), 1.0) for k, v in sums.items()}
        row: dict[str, Any] = {"epoch": epoch, "step": state.step, "train": train_terms}
        eval_model = loss_module.model
        for name, split in (("valid", valid), ("test", test)):
            if split is None:
                continue
            # Each rank evaluates its share of the split; the sums are reduced.
            part = Split(split.x[dist.rank :: dist.world_size], None if split.y is None else split.y[dist.rank :: dist.world_size])
            esums = evaluate_split(eval_model, objective, part, t.eval_batch_size)
            keys = list(esums)
            all_reduce_sum([esums[k] for k in keys], dist)
            row[name] = {k: float(esums[k]) / len(split) for k in keys}
        row["seconds"] = round(time.perf_counter() - start, 3)
        state.epoch = epoch
        good = _snapshot(loss_module, optimizers)
        if main_rank:
            test_txt = f"  test {_fmt(row['test'])}" if "test" in row else ""
            print(f"epoch {epoch:>3}/{t.epochs}  train {_fmt(train_terms)}{test_txt}  [{row['seconds']:.1f}s]", file=log, flush=True)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if epoch % t.checkpoint_every == 0 or epoch == t.epochs:
                _write_checkpoint(run_dir, loss_module, optimizers, state, row)
            history.append(row)
    if main_rank:
        print(f"done: {run_dir} (resume with `vaekit train --resume {run_dir} --epochs N`)", file=log)
    return history
