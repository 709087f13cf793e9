"""The whole process, as a user meets it: ``vaekit train`` against a plain PyTorch loop.

Each case is a fresh process, timed from its launch to its exit (wall clock) and by the
CPU time the kernel charges it (user + sys, ``os.wait4``), cases alternated, median of
``--pairs`` pairs with their range:

- ``vaekit``: ``vaekit train --config configs/002_aevb_bernoulli.yaml --dataset
  binarized-mnist --epochs E --threads T`` (the CLI's ``main``, run by this script so
  that it can time the trainer's phases; it adds one wrapper call per phase function);
- ``plain``: the loop a user writes by hand for the same model (784-500-500-20 softplus,
  Bernoulli, ``torch.optim.Adam(lr=1e-3)`` with its defaults, batch 100, shuffled index
  batches over tensors in memory), which scores the test split after every epoch and
  writes nothing.

Both processes record time stamps of their phases on the machine's monotonic clock, so
each second of the whole process is put somewhere: interpreter start, imports, command
line and config, data (read, on the device), the data fingerprint, build (model, objective, the
probe on two examples, optimiser), start (run files), the first step, the other steps,
scoring (the validation and test splits the trainer scores), the rest of the end of an
epoch (best weights, metrics), checkpoints, and the finish (exit included).

``--config``: another config for vaekit (e.g. ``configs/bmnist_hvae.yaml``); the plain
case is then the minimal loop over vaekit's own model and objective objects (the
config's learning rate and gradient clip, ``torch.optim.Adam`` with its defaults, the
test split scored after every epoch), so the difference is the trainer's own work.

Before timing, the script compiles the bytecode of the vaekit it measures (an installed
package has it; ``make setup`` writes it for the checkout; with PYTHONDONTWRITEBYTECODE
set, as on the machines here, every process would compile vaekit's modules again), and
points VAEKIT_CACHE_DIR at an empty folder: the first vaekit process hashes the data for
their fingerprint, the later ones find the files unchanged (a user's second command).

``--guard``: the short form CI runs. One epoch on the first ``--limit`` training images
(default 10,000), 3 pairs, exit status 1 when the median whole-process wall ratio
vaekit/plain passes ``--bound`` (default 1.3). The reference is measured in the same run,
so a slower or busier machine moves both cases alike.

Usage:
    python benchmarks/train_overhead.py                       # 3 epochs, 3 pairs, 1 thread
    python benchmarks/train_overhead.py --epochs 1 --pairs 5
    python benchmarks/train_overhead.py --guard               # CI: exit 1 above the bound
    python benchmarks/train_overhead.py --config configs/bmnist_hvae.yaml --threads 2
"""

from __future__ import annotations

# Only the standard library at the top: the children time their own imports.
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "002_aevb_bernoulli.yaml"
T0_ENV = "VAEKIT_BENCH_T0"  # the parent's monotonic clock when it launched the child
GUARD_LIMIT = 10_000
# The trainer's phase functions (vaekit.train.loop globals) timed in the vaekit child.
VAEKIT_PHASES = (
    "setup",
    "load_data",
    "build",
    "make_optimizer",
    "start_or_resume",
    "train_step",
    "end_of_epoch",
    "evaluate_split",
    "save_weights",
    "_checkpoint",
    "_finish",
)


# -- the children ---------------------------------------------------------------------------


class Stamps:
    """Wall and CPU seconds spent in named phases (nested phases are also counted in
    their parents). CPU seconds (``time.process_time``) hardly move with the machine's
    load; wall seconds do."""

    def __init__(self) -> None:
        self.t0 = float(os.environ.get(T0_ENV, time.perf_counter()))
        self.seconds: dict[str, float] = {"python_start": time.perf_counter() - self.t0}
        self.cpu: dict[str, float] = {"python_start": time.process_time()}
        self.calls: dict[str, int] = {}
        self.first_step = (0.0, 0.0)

    def add(self, name: str, since: tuple[float, float]) -> tuple[float, float]:
        """Count the time from ``since`` (a :func:`now`) in ``name``; returns it."""
        t, c = now()
        dt = (t - since[0], c - since[1])
        self.seconds[name] = self.seconds.get(name, 0.0) + dt[0]
        self.cpu[name] = self.cpu.get(name, 0.0) + dt[1]
        self.calls[name] = self.calls.get(name, 0) + 1
        return dt

    def write(self, path: str) -> None:
        # The exit itself (freeing the interpreter) is measured by the parent.
        record = {
            "seconds": self.seconds,
            "cpu_seconds": self.cpu,
            "calls": self.calls,
            "first_step": self.first_step,
            "until_exit": time.perf_counter() - self.t0,
            "cpu_until_exit": time.process_time(),
        }
        Path(path).write_text(json.dumps(record))


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def child_vaekit(stamps_path: str, argv: list[str]) -> int:
    """``vaekit`` with its trainer's phase functions wrapped in timers."""
    st = Stamps()
    t = now()
    import contextlib

    import vaekit.cli

    # The program imports its command's modules as cli.main does (a vaekit before
    # program_imports collected garbage while importing).
    with getattr(vaekit.cli, "program_imports", contextlib.nullcontext)():
        import vaekit.commands.train  # noqa: F401
        import vaekit.train.loop as loop

    st.add("imports", t)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = now()
            try:
                return fn(*args, **kwargs)
            finally:
                first = name == "train_step" and "train_step" not in st.calls
                dt = st.add(name, t)
                if first:
                    st.first_step = dt

        return wrapper

    for name in VAEKIT_PHASES:
        setattr(loop, name, timed(name, getattr(loop, name)))
    import vaekit.data as data

    # The data fingerprint inside the data phase (vaekit before its cache hashed always).
    fp = "cached_fingerprint" if hasattr(data, "cached_fingerprint") else "data_fingerprint"
    setattr(data, fp, timed("fingerprint", getattr(data, fp)))
    t = now()
    # As the `vaekit` script calls it (argv from sys.argv), so that the child ends as a
    # user's process does (cli.main freezes the collector before the exit).
    sys.argv = ["vaekit", *argv]
    rc = vaekit.cli.main()
    st.add("cli_total", t)
    st.write(stamps_path)
    return rc


def plain_data(st: Stamps, data: str, limit: int, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The training and test images as a plain loop loads them (float32 tensors of
    ``(N, *shape)``), stamped as the data phase."""
    import numpy as np
    import torch

    t = now()
    z = np.load(data)
    x = torch.from_numpy(z["train"].astype(np.float32)).view(-1, *shape)
    x_test = torch.from_numpy(z["test"].astype(np.float32)).view(-1, *shape)
    if limit:
        x = x[:limit]
    st.add("load_data", t)
    return x, x_test


def run_epochs(
    st: Stamps,
    x: Any,
    x_test: Any,
    epochs: int,
    batch: int,
    loss_of: Any,
    test_total: Any,
    opt: Any,
    before_step: Any = None,
    before_epoch: Any = None,
) -> None:
    """The plain loops' epochs: shuffled index batches, ``loss_of(batch)`` (a scalar),
    zero_grad, backward, ``before_step()`` (a gradient clip), the step; then the test split
    scored (``test_total()``, the summed loss), each phase stamped."""
    import torch

    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch + 1)
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            t = now()
            loss = loss_of(x[perm[i : i + batch]])
            opt.zero_grad()
            loss.backward()
            if before_step is not None:
                before_step()
            opt.step()
            first = "train_step" not in st.calls
            dt = st.add("train_step", t)
            if first:
                st.first_step = dt
        t = now()
        with torch.inference_mode():
            total = test_total()
        print(f"epoch {epoch + 1} test loss {total / len(x_test):.3f}", flush=True)
        st.add("evaluate_split", t)


def child_objects(
    stamps_path: str, data: str, epochs: int, threads: int, limit: int, config: str
) -> int:
    """For another config than tutorial 002's: the minimal loop over vaekit's own model
    and objective objects (built by vaekit as its trainer builds them), the config's
    learning rate and gradient clip, torch.optim.Adam with its defaults, the test split
    scored after every epoch; no guard, metrics, checkpoints or files. What it measures
    against is the trainer's own work around the same maths."""
    st = Stamps()
    t = now()
    import numpy  # noqa: F401  (its import is timed with the others)
    import torch
    from torch import nn

    from vaekit.config import load_config
    from vaekit.model import build_model
    from vaekit.objectives import build_objective

    st.add("imports", t)
    torch.set_num_threads(threads)
    x, x_test = plain_data(st, data, limit, (1, 28, 28))
    t = now()
    cfg = load_config(config, [])
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, (1, 28, 28), 0)
    objective = build_objective(cfg.objective)
    objective.setup(model)
    params = [*model.parameters(), *objective.parameters()]
    t_opt = now()
    opt = torch.optim.Adam(params, lr=cfg.train.lr)
    st.add("make_optimizer", t_opt)
    st.add("build", t)
    clip = cfg.train.grad_clip

    def epoch_start(epoch: int) -> None:
        objective.set_epoch(epoch)
        model.train()

    def test_total() -> float:
        model.eval()
        chunks = [x_test[j : j + 1000] for j in range(0, len(x_test), 1000)]
        return sum(float(objective(model, c, None).loss) * len(c) for c in chunks)

    run_epochs(
        st,
        x,
        x_test,
        epochs,
        cfg.train.batch_size,
        lambda xb: objective(model, xb, None).loss,
        test_total,
        opt,
        before_step=(lambda: nn.utils.clip_grad_norm_(params, clip)) if clip > 0 else None,
        before_epoch=epoch_start,
    )
    st.write(stamps_path)
    return 0


def child_plain(stamps_path: str, data: str, epochs: int, threads: int, limit: int) -> int:
    """The loop a user writes by hand, with the same phase stamps."""
    st = Stamps()
    t = now()
    import numpy  # noqa: F401  (its import is timed with the others)
    import torch
    import torch.nn.functional as F
    from torch import nn

    st.add("imports", t)
    torch.set_num_threads(threads)
    x, x_test = plain_data(st, data, limit, (784,))
    t = now()
    torch.manual_seed(0)
    enc = nn.Sequential(
        nn.Linear(784, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 40)
    )
    dec = nn.Sequential(
        nn.Linear(20, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 784)
    )
    t_opt = now()
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    st.add("make_optimizer", t_opt)
    st.add("build", t)

    def loss_fn(xb: torch.Tensor) -> torch.Tensor:
        mu, logvar = enc(xb).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(dec(z), xb, reduction="none").sum(-1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)
        return recon + kl

    def test_total() -> float:
        return sum(float(loss_fn(x_test[j : j + 1000]).sum()) for j in range(0, 10_000, 1000))

    run_epochs(st, x, x_test, epochs, 100, lambda xb: loss_fn(xb).mean(), test_total, opt)
    st.write(stamps_path)
    return 0


# -- the parent -----------------------------------------------------------------------------


def child_env(threads: int, src: str = str(HERE.parent / "src")) -> dict[str, str]:
    env = dict(os.environ)
    # One thread in both processes, however loaded the machine: torch's OpenMP threads
    # wait on each other when one is descheduled, which would measure the load, not the code.
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_case(cmd: list[str], env: dict[str, str], stamps: Path) -> dict[str, Any]:
    """Launch, wait, and return wall seconds, CPU seconds and the child's phase stamps."""
    env = dict(env)
    t = time.perf_counter()
    env[T0_ENV] = repr(t)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
    record = json.loads(stamps.read_text())
    record["wall"] = wall
    record["cpu"] = usage.ru_utime + usage.ru_stime
    record["exit"] = wall - record.pop("until_exit")
    record["cpu_exit"] = record["cpu"] - record.pop("cpu_until_exit")
    return record


def breakdown(record: dict[str, Any], vaekit: bool, kind: str = "wall") -> dict[str, float]:
    """Every second of one process in one named phase (they sum to its wall time, or with
    ``kind="cpu"`` to its CPU time)."""
    cpu = kind == "cpu"
    get = record["cpu_seconds" if cpu else "seconds"].get
    first_step = record["first_step"][1 if cpu else 0]
    total, exit_ = (record["cpu"], record["cpu_exit"]) if cpu else (record["wall"], record["exit"])
    steps = get("train_step", 0.0)
    if vaekit:
        # The CLI reads the config and imports the rest of the trainer before fit() calls
        # setup(); fit()'s phases between the timed ones (the epoch loop's batches, the
        # progress bar, the trackers) are the 'loop' remainder.
        timed_in_cli = sum(
            get(k, 0.0)
            for k in (
                "setup",
                "load_data",
                "build",
                "start_or_resume",
                "train_step",
                "end_of_epoch",
                "_checkpoint",
                "_finish",
            )
        )
        rest = get("cli_total", 0.0) - timed_in_cli
        rows = {
            "python_start": get("python_start", 0.0),
            "imports": get("imports", 0.0),
            "setup (config, device)": get("setup", 0.0),
            "data (read, to device)": get("load_data", 0.0) - get("fingerprint", 0.0),
            "data fingerprint": get("fingerprint", 0.0),
            "build (model, probe, optimiser)": get("build", 0.0) - get("make_optimizer", 0.0),
            "optimiser construction": get("make_optimizer", 0.0),
            "start (run files)": get("start_or_resume", 0.0),
            "first step": first_step,
            "other steps": steps - first_step,
            "scoring (valid + test)": get("evaluate_split", 0.0),
            "end of epoch, rest (best weights, metrics)": get("end_of_epoch", 0.0)
            - get("evaluate_split", 0.0),
            "checkpoints": get("_checkpoint", 0.0),
            "cli, batches and the rest": rest + get("_finish", 0.0),
        }
    else:
        rows = {
            "python_start": get("python_start", 0.0),
            "imports": get("imports", 0.0),
            "data (read, to device)": get("load_data", 0.0),
            "build (model, probe, optimiser)": get("build", 0.0) - get("make_optimizer", 0.0),
            "optimiser construction": get("make_optimizer", 0.0),
            "first step": first_step,
            "other steps": steps - first_step,
            "scoring (valid + test)": get("evaluate_split", 0.0),
        }
        accounted = sum(rows.values())
        rows["cli, batches and the rest"] = total - exit_ - accounted
    rows["exit"] = exit_
    return {k: round(v, 3) for k, v in rows.items()}


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "all": [round(v, 3) for v in values],
    }


def main() -> int:
    # The children: `--child vaekit STAMPS VAEKIT-ARGS...`, `--child plain STAMPS NPZ E T N`.
    if sys.argv[1:2] == ["--child"]:
        case, stamps, *args = sys.argv[2:]
        if case == "vaekit":
            return child_vaekit(stamps, args)
        npz, epochs, threads, limit, *config = args
        if config:
            return child_objects(stamps, npz, int(epochs), int(threads), int(limit), config[0])
        return child_plain(stamps, npz, int(epochs), int(threads), int(limit))
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("VAEKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")),
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--limit", type=int, default=None, help="train on the first N images (0 = all 50,000)"
    )
    p.add_argument(
        "--guard",
        action="store_true",
        help=f"CI's short form: 1 epoch, --limit {GUARD_LIMIT}, exit 1 when the median "
        "wall ratio vaekit/plain passes --bound",
    )
    p.add_argument("--bound", type=float, default=1.3)
    p.add_argument(
        "--config",
        default=str(CONFIG),
        help="the config vaekit trains (default tutorial 002's); for any other, the plain case "
        "is the minimal loop over vaekit's own model and objective objects",
    )
    p.add_argument("--set", action="append", default=[], help="extra vaekit --set KEY=VALUE")
    p.add_argument(
        "--baseline",
        default=None,
        help="the src folder of another vaekit checkout (e.g. main before a change): a third "
        "case, 'baseline', alternated with the other two",
    )
    p.add_argument(
        "--out", default=None, help="JSON to write (default results/train_overhead.json)"
    )
    a = p.parse_args()
    if a.guard:
        a.epochs = 1
        a.limit = GUARD_LIMIT if a.limit is None else a.limit
    a.limit = a.limit or 0
    if a.out is None:
        name = "train_overhead_guard.json" if a.guard else "train_overhead.json"
        a.out = str(HERE / "results" / name)
    envs = {"vaekit": child_env(a.threads), "plain": child_env(a.threads)}
    if a.baseline:
        envs["baseline"] = child_env(a.threads, str(Path(a.baseline).resolve()))
    cases = list(envs)
    work = Path(tempfile.mkdtemp(prefix="vaekit-overhead-"))
    import compileall

    for src in {
        str(HERE.parent / "src"),
        *([str(Path(a.baseline).resolve())] if a.baseline else []),
    }:
        # Bytecode as an installed package has it (pip compiles on install; `make setup`
        # compiles the checkout): with PYTHONDONTWRITEBYTECODE set, as on the machines
        # here, each process would otherwise compile vaekit's modules anew.
        compileall.compile_dir(src, quiet=1)
    for env in envs.values():
        # The data fingerprint's cache (vaekit.data.fingerprint) starts empty: the first
        # vaekit process hashes the data, the later ones find them unchanged, as a user's
        # second command does.
        env["VAEKIT_CACHE_DIR"] = str(work / "cache")
    stamps = work / "stamps.json"
    me = [sys.executable, str(Path(__file__).resolve())]
    npz = str(Path(a.data_dir) / "binarized_mnist.npz")
    records: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    config = str(Path(a.config).resolve())
    own_model = Path(config) == CONFIG.resolve()  # the hand-written MLP is tutorial 002's
    for r in range(a.pairs):
        # Rotate which case goes first, so that a drift in load favours none.
        order = cases[r % len(cases) :] + cases[: r % len(cases)]
        for case in order:
            if case != "plain":
                out = work / f"{case}{r}"
                sets = [f"data.limit={a.limit}", *a.set]
                cmd = [*me, "--child", "vaekit", str(stamps), "train", "--config", config]
                cmd += ["--dataset", "binarized-mnist", "--data-dir", a.data_dir]
                cmd += ["--epochs", str(a.epochs)]
                cmd += ["--threads", str(a.threads), "--out", str(out), "--no-progress"]
                cmd += [f"--set={s}" for s in sets]
            else:
                cmd = [*me, "--child", "plain", str(stamps), npz, str(a.epochs)]
                cmd += [str(a.threads), str(a.limit), *([] if own_model else [config])]
            records[case].append(run_case(cmd, envs[case], stamps))
        pl = records["plain"][-1]
        print(
            f"pair {r + 1}: "
            + ", ".join(
                f"{c} {records[c][-1]['wall']:.2f}s wall {records[c][-1]['cpu']:.2f}s cpu"
                for c in cases
            )
            + "; over plain: "
            + ", ".join(
                f"{c} {records[c][-1]['wall'] / pl['wall']:.3f} wall "
                f"{records[c][-1]['cpu'] / pl['cpu']:.3f} cpu"
                for c in cases
                if c != "plain"
            ),
            flush=True,
        )

    def ratios(case: str, kind: str) -> list[float]:
        return [v[kind] / p_[kind] for v, p_ in zip(records[case], records["plain"], strict=True)]

    phases = {
        kind: {
            case: {
                k: round(statistics.median(breakdown(r, case != "plain", kind)[k] for r in recs), 3)
                for k in breakdown(recs[0], case != "plain", kind)
            }
            for case, recs in records.items()
        }
        for kind in ("wall", "cpu")
    }
    sys.path.insert(0, str(HERE))
    from _machine import machine_record

    result: dict[str, Any] = {
        "machine": machine_record(a.threads),
        "command": f"vaekit train --config {os.path.relpath(config, HERE.parent)} "
        "--dataset binarized-mnist "
        f"--epochs {a.epochs} --threads {a.threads}"
        + (f" --set data.limit={a.limit}" if a.limit else "")
        + "".join(f" --set {s}" for s in a.set),
        "plain": (
            "hand-written loop, same model, torch.optim.Adam defaults, test split scored "
            "after every epoch"
            if own_model
            else "minimal loop over vaekit's own model and objective objects, "
            "torch.optim.Adam defaults at the config's lr, test split scored after every epoch"
        ),
        "epochs": a.epochs,
        "train_images": a.limit or 50_000,
        "pairs": a.pairs,
        "ratio_wall": summary(ratios("vaekit", "wall")),
        "ratio_cpu": summary(ratios("vaekit", "cpu")),
        "seconds_wall": {c: summary([r["wall"] for r in recs]) for c, recs in records.items()},
        "seconds_cpu": {c: summary([r["cpu"] for r in recs]) for c, recs in records.items()},
        "phases_median_wall_seconds": phases["wall"],
        "phases_median_cpu_seconds": phases["cpu"],
    }
    if a.baseline:
        result["baseline"] = str(Path(a.baseline).resolve())
        result["baseline_ratio_wall"] = summary(ratios("baseline", "wall"))
        result["baseline_ratio_cpu"] = summary(ratios("baseline", "cpu"))
    if a.guard:
        result["bound"] = a.bound
    print()
    head = "".join(f" {c + ' ' + kind:>14}" for kind in ("wall", "cpu") for c in cases)
    print(f"{'phase (median s)':<44}{head}")
    for k in phases["wall"]["vaekit"]:
        cells = "".join(
            f" {phases[kind][c].get(k, 0.0):14.2f}" for kind in ("wall", "cpu") for c in cases
        )
        print(f"{k:<44}{cells}")
    for c in cases:
        w, cp = result["seconds_wall"][c], result["seconds_cpu"][c]
        print(
            f"{c:<8} wall {w['median']:.2f}s ({w['min']:.2f}-{w['max']:.2f}), cpu {cp['median']:.2f}s"
        )
    if a.baseline:
        bw, bc = result["baseline_ratio_wall"], result["baseline_ratio_cpu"]
        print(
            f"baseline/plain: wall {bw['median']:.3f} ({bw['min']:.3f}-{bw['max']:.3f}), "
            f"cpu {bc['median']:.3f} ({bc['min']:.3f}-{bc['max']:.3f})"
        )
    rw, rc = result["ratio_wall"], result["ratio_cpu"]
    print(
        f"vaekit/plain: wall {rw['median']:.3f} ({rw['min']:.3f}-{rw['max']:.3f}), "
        f"cpu {rc['median']:.3f} ({rc['min']:.3f}-{rc['max']:.3f}); {a.epochs} epoch(s), "
        f"{a.limit or 50_000} training images, {a.threads} thread(s)"
    )
    # Here, not at the top: the children run this file too and time their own imports.
    from _machine import write_result

    write_result(Path(a.out), result)
    if a.guard and rw["median"] > a.bound:
        print(
            f"FAIL: vaekit train takes {rw['median']:.2f}x the plain loop's whole-process time "
            f"(bound {a.bound}); see the phases above for where the seconds went",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
