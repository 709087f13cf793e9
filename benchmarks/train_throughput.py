"""Training throughput: vaekit against a hand-written PyTorch loop, pythae, JAX and the matmul bound.

``--model mlp`` (default). Same model (tutorial 002: 784-500-500-20 softplus, Bernoulli,
Adam 1e-3), same data (statically binarized MNIST, 50,000 training images), same batch,
measured in one process with the cases interleaved, median of --repeats. For each batch
size it reports seconds per 50,000-image epoch, images/s, achieved GFLOP/s and the ratio to:

- ``ceiling``: float32 matmul GFLOP/s of a large square product on this machine;
- ``matmul replay``: only the matrix products of one training step at this batch size,
  replayed for a whole epoch: the in-situ bound no implementation can beat without
  changing the maths;
- ``eager``: a minimal hand-written eager PyTorch loop (nn.Sequential, torch.optim.Adam
  with its defaults, BCE-with-logits, in-memory tensors, shuffled index batches);
- ``pythae``: pythae's TrainingPipeline on the same model and data, run in a separate
  environment (``--pythae-python``; see benchmarks/README.md), when available;
- ``jax``: the same model, loss and Adam as one ``jax.jit`` step per batch (optax), run
  in a separate environment (``--jax-python``), when available; compile time is measured
  on a warm-up step and reported apart from the timed epoch.

``--model conv``: the convolutional VAE of configs/bmnist_conv.yaml. vaekit's trainer
against a minimal hand-written loop over the same model and objective objects (built by
vaekit), so the difference is the trainer's own overhead on a conv model. FLOPs are
counted with ``torch.utils.flop_counter.FlopCounterMode`` over one forward+backward of one
batch. The conv epoch is slow on a CPU, so by default only the first 10,000 images are
timed (``--limit``); it reports seconds per 10,000 images and the 50,000-image epoch
extrapolated from them. There is no matmul replay, pythae or JAX case for conv.

``--model layers``: the epoch cost of the models with several stochastic layers beside
the one-layer VampPrior model of ``configs/bmnist_vamp.yaml`` (the Tomczak & Welling
setting they share: batch 100, 784-300-300): ``bmnist_hvae``, ``bmnist_hvae_iaf`` (IAF on
its lower layer), ``bmnist_hvae_vamp`` and the convolutional top-down ``bmnist_topdown``. vaekit's trainer (its own ``train_seconds``) on
the first ``--limit`` images (``--conv-limit`` for the convolutional one, whose CPU steps
take seconds), repeats interleaved, extrapolated to a 50,000-image epoch.

Usage:
    python benchmarks/train_throughput.py --data-dir ../shared/data            # batch 100 and 500
    python benchmarks/train_throughput.py --batch 100 --repeats 3 --pythae-python /path/to/env/bin/python
    python benchmarks/train_throughput.py --batch 100 --jax-python /work/jax-env/bin/python
    python benchmarks/train_throughput.py --model conv --batch 100            # first 10,000 images
    python benchmarks/train_throughput.py --model layers --threads 1          # hierarchies vs VampPrior
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_record
from torch import nn

if TYPE_CHECKING:
    from vaekit.model import VAE
    from vaekit.objectives import Objective

HERE = Path(__file__).resolve().parent
LAYERS_ENC = [(784, 500), (500, 500), (500, 40)]
LAYERS_DEC = [(20, 500), (500, 500), (500, 784)]
MLP_CONFIG = HERE.parent / "configs" / "002_aevb_bernoulli.yaml"
CONV_CONFIG = HERE.parent / "configs" / "bmnist_conv.yaml"
CONV_DEFAULT_LIMIT = 10_000
# --model layers: the one-layer reference first, then the hierarchies.
LAYER_CONFIGS = (
    "bmnist_vamp",
    "bmnist_hvae",
    "bmnist_hvae_iaf",
    "bmnist_hvae_vamp",
    "bmnist_topdown",
)
LAYERS_DEFAULT_LIMIT = 5_000
LAYERS_CONV_LIMIT = 300


def flops_per_example() -> float:
    """Matmul FLOPs of one training example: forward 2mn per layer, backward twice that,
    except the first layer's input gradient (the data needs none)."""
    fwd = sum(2 * i * o for i, o in LAYERS_ENC + LAYERS_DEC)
    first = 2 * LAYERS_ENC[0][0] * LAYERS_ENC[0][1]
    return 3 * fwd - first


def matmul_ceiling(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def matmul_replay(batch: int, steps: int) -> float:
    """Seconds for ``steps`` steps of only the matmuls of one training step."""
    mats = []
    for i, o in LAYERS_ENC + LAYERS_DEC:
        x, w, g = torch.randn(batch, i), torch.randn(o, i), torch.randn(batch, o)
        mats.append((x, w, g, (i, o) != LAYERS_ENC[0]))

    def step() -> None:
        for x, w, g, input_grad in mats:
            x @ w.t()  # forward
            g.t() @ x  # weight gradient
            if input_grad:
                g @ w  # input gradient

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t


def eager_epoch(x: torch.Tensor, batch: int, seed: int) -> float:
    """The minimal hand-written loop a user would write."""
    torch.manual_seed(seed)
    enc = nn.Sequential(
        nn.Linear(784, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 40)
    )
    dec = nn.Sequential(
        nn.Linear(20, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 784)
    )
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    perm = torch.randperm(len(x))
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        xb = x[perm[i : i + batch]]
        mu, logvar = enc(xb).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(dec(z), xb, reduction="none").sum(-1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)
        loss = (recon + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def vaekit_epoch(
    batch: int,
    data_dir: str,
    seed: int,
    workdir: Path,
    limit: int = 0,
    config: Path = MLP_CONFIG,
) -> dict[str, float]:
    """One epoch of `vaekit.train.fit` on ``config`` (tutorial 002 by default); the trainer's
    own timing."""
    from vaekit.config import load_config
    from vaekit.train import fit

    cfg = load_config(
        config,
        [
            f"train.batch_size={batch}",
            "train.epochs=1",
            f"train.seed={seed}",
            f"data.limit={limit}",
        ],
    )
    out = Path(tempfile.mkdtemp(dir=workdir))
    t = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        rows = fit(cfg, out, data_dir=data_dir, progress=False, log=quiet)
    total = time.perf_counter() - t
    return {"train_seconds": float(rows[-1]["train_seconds"]), "fit_seconds": total}


def build_conv(seed: int, config: Path = CONV_CONFIG) -> tuple[VAE, Objective, float, float]:
    """The model and objective of configs/bmnist_conv.yaml (or ``config``), built by vaekit
    as its trainer builds them, with the learning rate and gradient clip of that config."""
    from vaekit.config import load_config
    from vaekit.model import build_model
    from vaekit.objectives import build_objective

    cfg = load_config(config, [])
    torch.manual_seed(seed)
    model = build_model(cfg.model, (1, 28, 28), 0)
    objective = build_objective(cfg.objective)
    objective.setup(model)  # parameters that depend on the model (none for the ELBO)
    objective.set_epoch(1)  # the KL warm-up weight of a first epoch, as in the vaekit run
    return model, objective, cfg.train.lr, cfg.train.grad_clip


def eager_conv_epoch(x: torch.Tensor, batch: int, seed: int, config: Path = CONV_CONFIG) -> float:
    """A minimal hand-written loop over vaekit's own conv model and objective objects.

    torch.optim.Adam with its defaults (foreach, not fused) at the config's learning rate;
    the config's gradient clip is kept because it is part of the maths of that config. What
    it leaves out is the trainer's own work: the non-finite guard, metric sums, the
    stop-request check and the progress bar. The trainer uses fused Adam, so it can come
    out faster than this loop."""
    model, objective, lr, clip = build_conv(seed, config)
    params = [*model.parameters(), *objective.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    perm = torch.randperm(len(x))
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        xb = x[perm[i : i + batch]]
        loss = objective(model, xb, None).loss
        opt.zero_grad()
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    return time.perf_counter() - t


def conv_flops_per_image(batch: int) -> float:
    """FLOPs of one training image of the conv model: FlopCounterMode over one forward and
    backward of one batch (convolutions and matrix products, as executed), divided by it."""
    from torch.utils.flop_counter import FlopCounterMode

    model, objective, _, _ = build_conv(seed=0)
    x = torch.bernoulli(torch.full((batch, 1, 28, 28), 0.5))
    with FlopCounterMode(display=False) as counter:
        objective(model, x, None).loss.backward()
    return counter.get_total_flops() / batch


PYTHAE_SCRIPT = textwrap.dedent(
    """
    import sys, time, json, numpy as np, torch
    from torch import nn
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseEncoder, BaseDecoder
    from pythae.trainers import BaseTrainerConfig
    from pythae.pipelines import TrainingPipeline
    torch.set_num_threads(int(sys.argv[3]))
    x = np.load(sys.argv[1])["train"].astype(np.float32).reshape(-1, 1, 28, 28)
    if int(sys.argv[5]):
        x = x[: int(sys.argv[5])]
    batch = int(sys.argv[2])
    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(784, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 40))
        def forward(self, x):
            mu, lv = self.net(x.reshape(len(x), -1)).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=lv)
    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(20, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 784), nn.Sigmoid())
        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(len(z), 1, 28, 28))
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce")
    model = VAE(cfg, encoder=Enc(), decoder=Dec())
    tcfg = BaseTrainerConfig(output_dir=sys.argv[4], num_epochs=1, learning_rate=1e-3,
                             per_device_train_batch_size=batch, per_device_eval_batch_size=1000,
                             optimizer_cls="Adam", steps_saving=None, no_cuda=True)
    t = time.perf_counter()
    TrainingPipeline(training_config=tcfg, model=model)(train_data=x, eval_data=None)
    print(json.dumps({"seconds": time.perf_counter() - t}))
    """
)


def pythae_epoch(
    python: str, npz: Path, batch: int, threads: int, workdir: Path, limit: int = 0
) -> float:
    script = workdir / "pythae_epoch.py"
    script.write_text(PYTHAE_SCRIPT)
    out = tempfile.mkdtemp(dir=workdir)
    res = subprocess.run(
        [python, str(script), str(npz), str(batch), str(threads), out, str(limit)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(res.stdout.strip().splitlines()[-1])["seconds"])


JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys, time, json
    from functools import partial
    npz = sys.argv[1]
    batch, threads, limit, seed = (int(v) for v in sys.argv[2:6])
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        # XLA's CPU thread pool follows the affinity mask; XLA_FLAGS such as
        # --xla_cpu_multi_thread_eigen=false or OMP_NUM_THREADS still spread a step over
        # several threads. Pin the process before jax is imported.
        os.sched_setaffinity(0, cpus[:threads])
    import numpy as np, jax, jax.numpy as jnp, optax
    x_np = np.load(npz)["train"].astype(np.float32)
    if limit:
        x_np = x_np[:limit]
    n = len(x_np)
    x = jax.device_put(x_np)  # on the device once
    def init(key, sizes):
        # PyTorch's nn.Linear default: weights and biases uniform in +-1/sqrt(fan_in).
        layers = []
        for i, o in sizes:
            key, kw, kb = jax.random.split(key, 3)
            s = 1 / np.sqrt(i)
            layers.append((jax.random.uniform(kw, (i, o), minval=-s, maxval=s),
                           jax.random.uniform(kb, (o,), minval=-s, maxval=s)))
        return layers
    def mlp(layers, h):
        for w, b in layers[:-1]:
            h = jax.nn.softplus(h @ w + b)
        w, b = layers[-1]
        return h @ w + b
    def loss_fn(params, xb, key):
        mu, logvar = jnp.split(mlp(params["enc"], xb), 2, axis=-1)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
        recon = optax.sigmoid_binary_cross_entropy(mlp(params["dec"], z), xb).sum(-1)
        kl = -0.5 * (1 + logvar - mu**2 - jnp.exp(logvar)).sum(-1)
        return (recon + kl).mean()
    opt = optax.adam(1e-3)
    # One jax.jit per training step (not a lax.scan over the epoch): the loop a JAX user
    # writes first. params and opt_state are donated, so XLA updates them in place. The
    # batch is gathered by index inside the step from the data already on the device.
    @partial(jax.jit, static_argnames="size", donate_argnums=(0, 1))
    def step(params, opt_state, key, x, perm, start, size):
        key, sub = jax.random.split(key)
        xb = x[jax.lax.dynamic_slice_in_dim(perm, start, size)]
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, sub)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss
    key, kenc, kdec = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {"enc": init(kenc, [(784, 500), (500, 500), (500, 40)]),
              "dec": init(kdec, [(20, 500), (500, 500), (500, 784)])}
    opt_state = opt.init(params)
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    # Warm-up: one step at each batch shape (compiles it), kept out of the timed epoch.
    t = time.perf_counter()
    key, kperm = jax.random.split(key)
    perm = jax.random.permutation(kperm, n)
    for size in sorted(set(sizes)):
        params, opt_state, key, loss = step(params, opt_state, key, x, perm, 0, size)
    jax.block_until_ready((params, opt_state))
    compile_seconds = time.perf_counter() - t
    key, kperm = jax.random.split(key)
    perm = jax.block_until_ready(jax.random.permutation(kperm, n))
    t = time.perf_counter()
    for i, size in enumerate(sizes):
        params, opt_state, key, loss = step(params, opt_state, key, x, perm, i * batch, size)
    jax.block_until_ready((params, opt_state))
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "compile_seconds": compile_seconds, "loss": float(loss),
                      "jax": jax.__version__, "optax": optax.__version__}))
    """
)


def jax_epoch(
    python: str, npz: Path, batch: int, threads: int, workdir: Path, seed: int, limit: int = 0
) -> dict[str, object]:
    """One jitted JAX epoch in its own environment: seconds, compile seconds and versions."""
    script = workdir / "jax_epoch.py"
    script.write_text(JAX_SCRIPT)
    res = subprocess.run(
        [python, str(script), str(npz), str(batch), str(threads), str(limit), str(seed)],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        raise RuntimeError(f"{python} {script} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_mlp(
    a: argparse.Namespace, npz: Path, workdir: Path, ceiling: float, results: dict[str, object]
) -> None:
    """The tutorial-002 MLP: replay, eager, vaekit and, when given, pythae and JAX."""
    x = torch.from_numpy(np.load(npz)["train"].astype(np.float32))
    if a.limit:
        x = x[: a.limit]
    n = len(x)
    fl = flops_per_example() * n / 1e9
    results["gflop_per_epoch"] = round(fl, 1)
    results["matmul_ceiling_gflops"] = round(ceiling, 1)
    batches: dict[str, dict[str, Any]] = {}
    results["batches"] = batches
    for batch in a.batch:
        steps = -(-n // batch)
        times: dict[str, list[float]] = {"replay": [], "eager": [], "vaekit": [], "vaekit_fit": []}
        if a.pythae_python:
            times["pythae"] = []
        if a.jax_python:
            times["jax"] = []
        jax_compile: list[float] = []
        for r in range(a.repeats):
            times["replay"].append(matmul_replay(batch, steps))
            times["eager"].append(eager_epoch(x, batch, seed=r))
            v = vaekit_epoch(batch, a.data_dir, seed=r, workdir=workdir, limit=a.limit)
            times["vaekit"].append(v["train_seconds"])
            times["vaekit_fit"].append(v["fit_seconds"])
            if a.pythae_python:
                times["pythae"].append(
                    pythae_epoch(a.pythae_python, npz, batch, a.threads, workdir, a.limit)
                )
            compiled = ""
            if a.jax_python:
                j = jax_epoch(a.jax_python, npz, batch, a.threads, workdir, seed=r, limit=a.limit)
                times["jax"].append(float(j["seconds"]))  # type: ignore[arg-type]
                jax_compile.append(float(j["compile_seconds"]))  # type: ignore[arg-type]
                results["machine"]["jax"] = j["jax"]  # type: ignore[index]
                results["machine"]["optax"] = j["optax"]  # type: ignore[index]
                compiled = f" (+ jax compile {jax_compile[-1]:.2f}s)"
            print(
                f"batch {batch} repeat {r + 1}: "
                + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
                + compiled,
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        row: dict[str, Any] = {
            "seconds_per_epoch": {k: round(v, 3) for k, v in med.items()},
            "all_seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
            "images_per_s": {k: round(n / v) for k, v in med.items() if k != "vaekit_fit"},
            "gflops": {k: round(fl / v, 1) for k, v in med.items() if k != "vaekit_fit"},
            "vaekit_over_eager": round(med["vaekit"] / med["eager"], 3),
            "vaekit_over_replay": round(med["vaekit"] / med["replay"], 3),
            "replay_fraction_of_ceiling": round(fl / med["replay"] / ceiling, 3),
        }
        if "pythae" in med:
            row["pythae_over_vaekit"] = round(med["pythae"] / med["vaekit"], 3)
        if "jax" in med:
            row["vaekit_over_jax"] = round(med["vaekit"] / med["jax"], 3)
            row["jax_over_replay"] = round(med["jax"] / med["replay"], 3)
            # Compile + first step at each batch shape, outside seconds_per_epoch["jax"].
            row["jax_compile_seconds"] = {
                "median": round(statistics.median(jax_compile), 3),
                "all": [round(t, 3) for t in jax_compile],
            }
        batches[str(batch)] = row
    print()
    print(
        f"matmul ceiling {ceiling:.0f} GFLOP/s; {fl:.0f} GFLOP per {n:,}-image epoch; {a.threads} threads"
    )
    print(f"{'batch':>5} {'case':<14} {'s/epoch':>8} {'img/s':>8} {'GFLOP/s':>8} {'vs replay':>9}")
    for batch, row in batches.items():
        for case, s in row["seconds_per_epoch"].items():
            if case == "vaekit_fit":
                continue
            print(
                f"{batch:>5} {case:<14} {s:8.2f} {n / s:8.0f} {fl / s:8.1f} {s / row['seconds_per_epoch']['replay']:9.2f}"
            )
        extra = (
            f", pythae/vaekit {row['pythae_over_vaekit']}" if "pythae_over_vaekit" in row else ""
        )
        if "vaekit_over_jax" in row:
            extra += (
                f", vaekit/jax {row['vaekit_over_jax']}, jax/replay {row['jax_over_replay']}"
                f", jax compile {row['jax_compile_seconds']['median']:.2f}s"
            )
        print(
            f"{'':>5} vaekit/eager {row['vaekit_over_eager']}, vaekit/replay {row['vaekit_over_replay']}{extra}"
        )


def bench_conv(
    a: argparse.Namespace, npz: Path, workdir: Path, ceiling: float, results: dict[str, object]
) -> None:
    """The conv model of configs/bmnist_conv.yaml: vaekit's trainer against a minimal loop
    over the same model and objective. Seconds are scaled to 10,000 images and extrapolated
    to a 50,000-image epoch, since only --limit images are timed."""
    x = torch.from_numpy(np.load(npz)["train"].astype(np.float32)).reshape(-1, 1, 28, 28)
    if a.limit:
        x = x[: a.limit]
    n = len(x)
    results["config"] = str(CONV_CONFIG.relative_to(HERE.parent))
    results["images_timed"] = n
    results["matmul_ceiling_gflops"] = round(ceiling, 1)
    results["flop_count"] = "FlopCounterMode, one forward+backward of one batch, x images"
    results["not_measured"] = "matmul replay, pythae and jax run the MLP only (--model mlp)"
    batches: dict[str, dict[str, Any]] = {}
    results["batches"] = batches
    for batch in a.batch:
        per_image = conv_flops_per_image(batch)
        fl = per_image * n / 1e9
        times: dict[str, list[float]] = {"eager": [], "vaekit": [], "vaekit_fit": []}
        for r in range(a.repeats):
            times["eager"].append(eager_conv_epoch(x, batch, seed=r))
            v = vaekit_epoch(
                batch, a.data_dir, seed=r, workdir=workdir, limit=a.limit, config=CONV_CONFIG
            )
            times["vaekit"].append(v["train_seconds"])
            times["vaekit_fit"].append(v["fit_seconds"])
            print(
                f"batch {batch} repeat {r + 1} ({n} images): "
                + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        timed = {k: v for k, v in med.items() if k != "vaekit_fit"}
        row: dict[str, Any] = {
            "gflop_per_image": round(per_image / 1e9, 4),
            "gflop_per_50k_epoch": round(per_image * 50_000 / 1e9, 1),
            "seconds_measured": {k: round(v, 3) for k, v in med.items()},
            "all_seconds_measured": {k: [round(t, 3) for t in v] for k, v in times.items()},
            # vaekit_fit adds set-up and the evaluation of valid and test, which do not
            # grow with the training images: it is reported as measured, never scaled.
            "seconds_per_10k_images": {k: round(v * 10_000 / n, 3) for k, v in timed.items()},
            "seconds_per_50k_epoch_extrapolated": {
                k: round(v * 50_000 / n, 1) for k, v in timed.items()
            },
            "images_per_s": {k: round(n / v, 1) for k, v in timed.items()},
            "gflops": {k: round(fl / v, 1) for k, v in timed.items()},
            "fraction_of_ceiling": {k: round(fl / v / ceiling, 3) for k, v in timed.items()},
            "vaekit_over_eager": round(med["vaekit"] / med["eager"], 3),
        }
        batches[str(batch)] = row
    print()
    print(
        f"conv model ({results['config']}), {n:,} images timed; matmul ceiling {ceiling:.0f} GFLOP/s; "
        f"{a.threads} threads"
    )
    print(
        f"{'batch':>5} {'case':<8} {'s/10k img':>9} {'s/50k (extrap.)':>15} {'img/s':>7} "
        f"{'GFLOP/s':>8} {'of ceiling':>10}"
    )
    for batch, row in batches.items():
        for case in row["images_per_s"]:
            print(
                f"{batch:>5} {case:<8} {row['seconds_per_10k_images'][case]:9.2f} "
                f"{row['seconds_per_50k_epoch_extrapolated'][case]:15.1f} "
                f"{row['images_per_s'][case]:7.1f} {row['gflops'][case]:8.1f} "
                f"{row['fraction_of_ceiling'][case]:10.3f}"
            )
        print(
            f"{'':>5} vaekit/eager {row['vaekit_over_eager']}, "
            f"{row['gflop_per_image'] * 1e3:.0f} MFLOP per image (FlopCounterMode)"
        )


def bench_layers(a: argparse.Namespace, workdir: Path, results: dict[str, object]) -> None:
    """Seconds per 50,000-image epoch of each config of LAYER_CONFIGS (the batch size of
    the configs), and each one's ratio to the one-layer VampPrior's: vaekit's trainer for the
    MLP models; for the convolutional one, whose evaluation of 20,000 images at the end of
    a trainer epoch would take far longer on a CPU than the images timed, the minimal loop
    over its model and objective (the trainer's own overhead is within noise for conv
    models, see --model conv)."""
    from vaekit.config import find_config, load_config

    npz = Path(a.data_dir) / "binarized_mnist.npz"
    # The one-layer VampPrior model is always timed first: the ratios' reference.
    names = [LAYER_CONFIGS[0], *(c for c in a.configs or LAYER_CONFIGS if c != LAYER_CONFIGS[0])]
    limits = {name: a.conv_limit if name == "bmnist_topdown" else a.limit for name in names}
    x_conv = torch.from_numpy(np.load(npz)["train"][: a.conv_limit].astype(np.float32))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(a.repeats):
        for name in names:
            batch = load_config(name).train.batch_size
            if name == "bmnist_topdown":
                x = x_conv.reshape(-1, 1, 28, 28)
                seconds = eager_conv_epoch(x, batch, seed=r, config=find_config(name))
            else:
                seconds = vaekit_epoch(
                    batch,
                    a.data_dir,
                    seed=r,
                    workdir=workdir,
                    limit=limits[name],
                    config=find_config(name),
                )["train_seconds"]
            times[name].append(seconds)
            print(f"repeat {r + 1}: {name} {seconds:.2f}s ({limits[name]} images)", flush=True)
    per_epoch = {name: statistics.median(t) * 50_000 / limits[name] for name, t in times.items()}
    ref = per_epoch[names[0]]
    results["configs"] = {
        name: {
            "images_timed": limits[name],
            "timed_by": "loop over the model and objective"
            if name == "bmnist_topdown"
            else "trainer",
            "all_seconds": [round(t, 3) for t in times[name]],
            "seconds_per_50k_epoch_extrapolated": round(per_epoch[name], 1),
            "over_one_layer_vamp": round(per_epoch[name] / ref, 2),
        }
        for name in names
    }
    print()
    print(
        f"{'config':<18} {'images':>7} {'s/50k epoch':>12} {'/ bmnist_vamp':>13}   ({a.threads} threads)"
    )
    for name, row in results["configs"].items():  # type: ignore[union-attr]
        print(
            f"{name:<18} {row['images_timed']:>7} {row['seconds_per_50k_epoch_extrapolated']:>12.1f} "
            f"{row['over_one_layer_vamp']:>13.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("VAEKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")),
    )
    p.add_argument(
        "--model",
        choices=["mlp", "conv", "layers"],
        default="mlp",
        help="mlp: tutorial 002 with every case; conv: configs/bmnist_conv.yaml, vaekit vs eager; "
        "layers: the hierarchies' epoch cost beside the one-layer VampPrior's",
    )
    p.add_argument("--batch", type=int, nargs="+", default=[100, 500])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"use only the first N training images (0 = all; default: all for mlp, "
        f"{CONV_DEFAULT_LIMIT} for conv, {LAYERS_DEFAULT_LIMIT} for layers)",
    )
    p.add_argument(
        "--conv-limit",
        type=int,
        default=LAYERS_CONV_LIMIT,
        help=f"--model layers: images timed for the convolutional hierarchy (default {LAYERS_CONV_LIMIT})",
    )
    p.add_argument(
        "--configs",
        nargs="+",
        choices=LAYER_CONFIGS,
        default=None,
        help="--model layers: only these configs, beside bmnist_vamp (always timed: the "
        "reference of the ratio); default: all",
    )
    p.add_argument(
        "--pythae-python",
        default=os.environ.get("PYTHAE_PYTHON"),
        help="python of an environment with pythae (optional; mlp only)",
    )
    p.add_argument(
        "--jax-python",
        default=os.environ.get("JAX_PYTHON"),
        help="python of an environment with jax and optax (optional; mlp only)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON to write (default: results/train_throughput.json, "
        "results/train_throughput_conv.json for conv)",
    )
    a = p.parse_args()
    if a.limit is None:
        a.limit = {"conv": CONV_DEFAULT_LIMIT, "layers": LAYERS_DEFAULT_LIMIT}.get(a.model, 0)
    if a.out is None:
        name = {"conv": "train_throughput_conv.json", "layers": "train_throughput_layers.json"}
        a.out = str(HERE / "results" / name.get(a.model, "train_throughput.json"))
    if a.model != "mlp" and (a.pythae_python or a.jax_python):
        print(
            f"note: pythae and jax run the MLP only; ignored for --model {a.model}", file=sys.stderr
        )
    torch.set_num_threads(a.threads)
    npz = Path(a.data_dir) / "binarized_mnist.npz"
    workdir = Path(tempfile.mkdtemp(prefix="vaekit-bench-"))
    ceiling = statistics.median(matmul_ceiling() for _ in range(3))
    results: dict[str, object] = {
        "machine": machine_record(a.threads),
        "model": a.model,
    }
    if a.model == "conv":
        bench_conv(a, npz, workdir, ceiling, results)
    elif a.model == "layers":
        bench_layers(a, workdir, results)
    else:
        bench_mlp(a, npz, workdir, ceiling, results)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
