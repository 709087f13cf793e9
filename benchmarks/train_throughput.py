"""Training throughput: vaekit against a hand-written PyTorch loop, pythae and the matmul bound.

Same model (tutorial 002: 784-500-500-20 softplus, Bernoulli, Adam 1e-3), same data
(statically binarized MNIST, 50,000 training images), same batch, measured in one
process with the cases interleaved, median of --repeats. For each batch size it reports
seconds per 50,000-image epoch, images/s, achieved GFLOP/s and the ratio to:

- ``ceiling``: float32 matmul GFLOP/s of a large square product on this machine;
- ``matmul replay``: only the matrix products of one training step at this batch size,
  replayed for a whole epoch: the in-situ bound no implementation can beat without
  changing the maths;
- ``eager``: a minimal hand-written eager PyTorch loop (nn.Sequential, torch.optim.Adam
  with its defaults, BCE-with-logits, in-memory tensors, shuffled index batches);
- ``pythae``: pythae's TrainingPipeline on the same model and data, run in a separate
  environment (``--pythae-python``; see benchmarks/README.md), when available.

Usage:
    python benchmarks/train_throughput.py --data-dir ../shared/data            # batch 100 and 500
    python benchmarks/train_throughput.py --batch 100 --repeats 3 --pythae-python /path/to/env/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
LAYERS_ENC = [(784, 500), (500, 500), (500, 40)]
LAYERS_DEC = [(20, 500), (500, 500), (500, 784)]


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
    batch: int, data_dir: str, seed: int, workdir: Path, limit: int = 0
) -> dict[str, float]:
    """One epoch of `vaekit.train.fit` on the tutorial-002 config; the trainer's own timing."""
    from vaekit.config import load_config
    from vaekit.train import fit

    cfg = load_config(
        HERE.parent / "configs" / "002_aevb_bernoulli.yaml",
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


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("VAEKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")),
    )
    p.add_argument("--batch", type=int, nargs="+", default=[100, 500])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="use only the first N training images (a quick check; 0 = all)",
    )
    p.add_argument(
        "--pythae-python",
        default=os.environ.get("PYTHAE_PYTHON"),
        help="python of an environment with pythae (optional)",
    )
    p.add_argument("--out", default=str(HERE / "results" / "train_throughput.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    npz = Path(a.data_dir) / "binarized_mnist.npz"
    x = torch.from_numpy(np.load(npz)["train"].astype(np.float32))
    if a.limit:
        x = x[: a.limit]
    n = len(x)
    fl = flops_per_example() * n / 1e9
    workdir = Path(tempfile.mkdtemp(prefix="vaekit-bench-"))
    ceiling = statistics.median(matmul_ceiling() for _ in range(3))
    results: dict[str, object] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": a.threads,
            "torch": torch.__version__,
        },
        "gflop_per_epoch": round(fl, 1),
        "matmul_ceiling_gflops": round(ceiling, 1),
        "batches": {},
    }
    for batch in a.batch:
        steps = -(-n // batch)
        times: dict[str, list[float]] = {"replay": [], "eager": [], "vaekit": [], "vaekit_fit": []}
        if a.pythae_python:
            times["pythae"] = []
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
            print(
                f"batch {batch} repeat {r + 1}: "
                + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
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
        results["batches"][str(batch)] = row  # type: ignore[index]
    print()
    print(
        f"matmul ceiling {ceiling:.0f} GFLOP/s; {fl:.0f} GFLOP per 50,000-image epoch; {a.threads} threads"
    )
    print(f"{'batch':>5} {'case':<14} {'s/epoch':>8} {'img/s':>8} {'GFLOP/s':>8} {'vs replay':>9}")
    for batch, row in results["batches"].items():  # type: ignore[union-attr]
        for case, s in row["seconds_per_epoch"].items():
            if case == "vaekit_fit":
                continue
            print(
                f"{batch:>5} {case:<14} {s:8.2f} {n / s:8.0f} {fl / s:8.1f} {s / row['seconds_per_epoch']['replay']:9.2f}"
            )
        extra = (
            f", pythae/vaekit {row['pythae_over_vaekit']}" if "pythae_over_vaekit" in row else ""
        )
        print(
            f"{'':>5} vaekit/eager {row['vaekit_over_eager']}, vaekit/replay {row['vaekit_over_replay']}{extra}"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
