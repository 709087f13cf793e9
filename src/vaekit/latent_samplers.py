"""The post-hoc latent samplers themselves: what each one fits and draws, and its files.

A sampler (:class:`Sampler`) draws latent codes for a run's decoder from a density fitted
to the run's codes: ``prior`` (the model's own p(z)), ``gmm``, ``flow`` and ``two-stage``
(see :mod:`vaekit.samplers`, which fits them to a run, for what each is). This module
knows nothing of runs: it saves a fitted sampler into a folder and reads it back, so that
the run directory (:meth:`vaekit.rundir.Run.sampler`) can load the samplers of a run
without importing the trainer, which the two-stage sampler fits with.

Layout of a sampler's folder (``RUN/samplers/NAME``): ``sampler.json`` (what was fitted,
on which weights, the selection scores) beside the fitted parameters and
``standardise.safetensors``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import io
import json
import math
import shutil
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TextIO

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.config import Config, load_config
from vaekit.distributions.priors import tempered
from vaekit.errors import VaekitError
from vaekit.optim import EagerAdam
from vaekit.storage import atomic_write, load_weights, save_weights, write_json

__all__ = [
    "SAMPLERS",
    "SAMPLERS_DIR",
    "SAMPLER_FILE",
    "SamplerError",
    "Sampler",
    "PriorSampler",
    "GMMSampler",
    "FlowSampler",
    "TwoStageSampler",
    "Codes",
    "model_digest",
    "sampler_class",
    "sampler_options",
    "check_unconditional",
    "saved_samplers",
    "sampler_names",
]

SAMPLERS_DIR = "samplers"
SAMPLER_FILE = "sampler.json"


class SamplerError(VaekitError, ValueError):
    """A sampler that cannot be fitted, loaded or used as asked; the message says why."""


class OpenRun(Protocol):
    """Loads a run directory (:func:`vaekit.rundir.load`): a two-stage sampler is one."""

    def __call__(self, run_dir: Path, /, *, weights: str) -> Any: ...


class TrainRun(Protocol):
    """Trains a config into a run directory (:func:`vaekit.train.fit`)."""

    def __call__(
        self, config: Config, out: Path, /, *, progress: bool, log: TextIO, _within_run: bool
    ) -> Any: ...


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's weights: which weights a sampler was fitted on."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Codes:
    """Posterior means of a run's data: ``fit`` to fit on, ``held`` to select and stop on."""

    fit: Tensor
    held: Tensor
    source: str


def sampler_options(cls: type, given: Mapping[str, Any], where: str) -> Any:
    """``cls``'s Options from ``given``, with a did-you-mean for an unknown key."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SamplerError(
                f"{where} has no option {key!r}{extra}; its options: {', '.join(names)}"
            )
    try:
        options = cls(**given)
    except TypeError as e:
        raise SamplerError(f"{where}: {e}") from None
    check = getattr(options, "validate", None)
    if check is not None:
        check(where)
    return options


def _positive(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SamplerError(f"{where} must be a positive number, got {value!r}")


def _check_temperature(t: float) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and t > 0):
        raise SamplerError(f"the temperature must be a positive number, got {t!r}")
    return float(t)


class Sampler(ABC):
    """Draws latent codes z ``(n, latent_dim)`` for a run's decoder.

    Subclasses that are fitted implement :meth:`_fit`, :meth:`_draw`, :meth:`_save` and
    :meth:`_load` on standardised codes; the base class standardises and writes
    ``sampler.json``.
    """

    name: ClassVar[str]
    # One line for listings and reports.
    summary: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = True

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None) -> None:
        # The subclass's Options (typed Any: each subclass declares its own dataclass).
        self.options: Any = options if options is not None else self.Options()
        self.info: dict[str, Any] = {}
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    @property
    def label(self) -> str:
        """The sampler in a few words, as reports and tables show it."""
        return self.name

    # -- the public side ------------------------------------------------------------------

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` latent codes; ``temperature`` < 1 draws closer to the density's modes."""
        t = _check_temperature(temperature)
        if self.mean is None or self.std is None:
            raise SamplerError(f"the {self.name} sampler is not fitted yet")
        with torch.no_grad():
            u = self._draw(int(n), t)
        return (u * self.std + self.mean).float()

    def fit(self, codes: Codes, log: TextIO | None = None, seed: int = 0) -> Sampler:
        """Fit on ``codes`` (the run's posterior means); fills :attr:`info`."""
        fit, held = codes.fit.double(), codes.held.double()
        self.mean = fit.mean(0)
        # A dimension the encoder does not use has (almost) no spread: keep it as it is.
        self.std = fit.std(0).clamp_min(1e-6 * float(fit.std(0).max().clamp_min(1e-12)))
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            details = self._fit(self._standard(fit), self._standard(held), log)
        self.info = {
            "sampler": self.name,
            "options": dataclasses.asdict(self.options),
            "codes": codes.source,
            "latent_dim": int(fit.shape[1]),
            "seed": seed,
            "fit_seconds": round(time.perf_counter() - start, 2),
            **details,
        }
        self.mean, self.std = self.mean.float(), self.std.float()
        return self

    def save(self, folder: Path, extra: Mapping[str, Any] | None = None) -> list[Path]:
        """Write the fitted sampler into ``folder`` (``sampler.json`` last: a complete set);
        returns the paths written."""
        assert self.mean is not None and self.std is not None
        folder.mkdir(parents=True, exist_ok=True)
        written = self._save(folder)
        tmp = folder / ".standardise.safetensors.tmp"
        save_file({"mean": self.mean.contiguous(), "std": self.std.contiguous()}, str(tmp))
        tmp.replace(folder / "standardise.safetensors")
        self.info.update(extra or {})
        write_json(folder / SAMPLER_FILE, self.info)
        return [*written, folder / "standardise.safetensors", folder / SAMPLER_FILE]

    @classmethod
    def load(cls, folder: Path, open_run: OpenRun | None = None) -> Sampler:
        """A sampler saved by :meth:`save`; ``open_run`` loads the run directory a two-stage
        sampler keeps (:func:`vaekit.rundir.load`)."""
        info = json.loads((folder / SAMPLER_FILE).read_text())
        sampler = cls(
            sampler_options(
                cls.Options, info.get("options", {}), f"{folder / SAMPLER_FILE} options"
            )
        )
        sampler.info = info
        stats = load_file(str(folder / "standardise.safetensors"))
        sampler.mean, sampler.std = stats["mean"], stats["std"]
        sampler._load(folder, open_run)
        return sampler

    # -- what each sampler implements -------------------------------------------------------

    def _standard(self, z: Tensor) -> Tensor:
        assert self.mean is not None and self.std is not None
        return (z - self.mean) / self.std

    @abstractmethod
    def _fit(self, fit: Tensor, held: Tensor, log: TextIO | None) -> dict[str, Any]:
        """Fit on standardised float64 codes; return what sampler.json should record."""

    @abstractmethod
    def _draw(self, n: int, t: float) -> Tensor:
        """``n`` standardised codes at temperature ``t``."""

    @abstractmethod
    def _save(self, folder: Path) -> list[Path]:
        """Write what the sampler learned into ``folder``; return the paths written."""

    @abstractmethod
    def _load(self, folder: Path, open_run: OpenRun | None) -> None: ...


class PriorSampler(Sampler):
    """The model's own prior p(z); ``temperature`` scales its standard deviation."""

    name = "prior"
    summary = "the model's prior p(z)"
    needs_fit = False

    def __init__(self, prior: Distribution) -> None:
        super().__init__()
        self.prior = prior
        self.info = {"sampler": "prior"}

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        with torch.no_grad():
            return tempered(self.prior, _check_temperature(temperature)).sample((int(n),)).float()

    def _fit(self, fit: Tensor, held: Tensor, log: TextIO | None) -> dict[str, Any]:
        raise SamplerError("the prior sampler is the model's own p(z): there is nothing to fit")

    def _draw(self, n: int, t: float) -> Tensor:  # pragma: no cover - sample() is overridden
        raise NotImplementedError

    def _save(self, folder: Path) -> list[Path]:  # pragma: no cover - never saved
        raise NotImplementedError

    def _load(
        self, folder: Path, open_run: OpenRun | None
    ) -> None:  # pragma: no cover - never saved
        raise NotImplementedError


class GMMSampler(Sampler):
    """A Gaussian mixture with full covariances on the codes (Ghosh et al. 2020's GMM).

    Every candidate number of components is fitted (EM, k-means start) on the training
    codes; the one whose mixture gives the held-out codes the highest average
    log-likelihood is kept. ``sampler.json`` lists each candidate's held-out score and
    BIC. ``temperature`` scales every component's spread about its mean.
    """

    name = "gmm"
    summary = "Gaussian mixture on the codes (components chosen on held-out codes)"

    @dataclass
    class Options:
        # Candidate numbers of components (those above a tenth of the codes are skipped).
        components: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50])
        # EM iterations at most, per candidate.
        max_iter: int = 200

        def validate(self, where: str) -> None:
            if not self.components or not all(
                isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in self.components
            ):
                raise SamplerError(
                    f"{where}.components must be a non-empty list of positive integers, "
                    f"got {self.components!r}"
                )
            _positive(f"{where}.max_iter", self.max_iter)

    @property
    def label(self) -> str:
        k = self.info.get("chosen_components")
        return f"gmm{k}" if k else "gmm"

    def _fit(self, fit: Tensor, held: Tensor, log: TextIO | None) -> dict[str, Any]:
        # scikit-learn costs ~1.3 s of start-up: imported by the fit that needs it.
        from sklearn import exceptions, mixture

        x, xh = fit.numpy(), held.numpy()
        ks = sorted({k for k in self.options.components if k <= max(1, len(x) // 10)})
        if not ks:
            raise SamplerError(
                f"{len(x)} codes are too few for {self.options.components} components"
            )
        scores: list[dict[str, Any]] = []
        best, best_score = None, -math.inf
        for k in ks:
            gmm = mixture.GaussianMixture(
                k,
                covariance_type="full",
                max_iter=int(self.options.max_iter),
                reg_covar=1e-6,
                random_state=int(torch.randint(0, 2**31 - 1, ()).item()),
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
                gmm.fit(x)
            score = float(gmm.score(xh))
            scores.append(
                {
                    "components": k,
                    "held_out_log_likelihood": round(score, 4),
                    "bic": round(float(gmm.bic(x)), 1),
                    "converged": bool(gmm.converged_),
                }
            )
            if log is not None:
                print(f"  gmm: {k:3d} components, held-out log-likelihood {score:.3f}", file=log)
            if score > best_score:
                best, best_score = gmm, score
        assert best is not None
        self._set(best.weights_, best.means_, best.covariances_)
        return {
            "chosen_components": int(best.n_components),
            "selection": "highest held-out log-likelihood per code (standardised codes)",
            "candidates": scores,
        }

    def _set(self, weights: Any, means: Any, covs: Any) -> None:
        self.weights = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        self.means = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        self.covariances = torch.as_tensor(np.asarray(covs), dtype=torch.float64)
        self.scale_tril = torch.linalg.cholesky(self.covariances)

    def _draw(self, n: int, t: float) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True)
        eps = torch.randn(n, self.means.shape[1], dtype=torch.float64)
        return self.means[k] + t * (self.scale_tril[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def _save(self, folder: Path) -> list[Path]:
        tensors = {"weights": self.weights, "means": self.means, "covariances": self.covariances}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "gmm.safetensors"))
        return [folder / "gmm.safetensors"]

    def _load(self, folder: Path, open_run: OpenRun | None) -> None:
        t = load_file(str(folder / "gmm.safetensors"))
        self._set(t["weights"], t["means"], t["covariances"])


def _zuko() -> Any:
    try:
        import zuko
    except ImportError:
        raise SamplerError(
            'the flow sampler needs zuko, an optional extra: pip install "vaekit[flows]" '
            "(or pip install zuko)"
        ) from None
    return zuko


class FlowSampler(Sampler):
    """A normalizing flow on the codes (zuko's NSF or MAF), fitted by maximum likelihood.

    Adam on the training codes; the epoch with the best held-out log-likelihood is kept
    and training stops ``patience`` epochs after it. ``temperature`` scales the flow's
    base N(0, I) draws before they are mapped to codes.
    """

    name = "flow"
    summary = "normalizing flow on the codes (zuko NSF/MAF)"

    @dataclass
    class Options:
        # nsf: rational-quadratic spline transforms; maf: affine autoregressive transforms.
        kind: str = "nsf"
        # Autoregressive transforms, and the hidden widths of each one's network.
        transforms: int = 3
        hidden: list[int] = field(default_factory=lambda: [128, 128])
        epochs: int = 100
        patience: int = 10
        batch_size: int = 256
        lr: float = 1e-3

        def validate(self, where: str) -> None:
            if self.kind not in ("nsf", "maf"):
                raise SamplerError(f"{where}.kind must be nsf or maf, got {self.kind!r}")
            for name in ("transforms", "epochs", "patience", "batch_size", "lr"):
                _positive(f"{where}.{name}", getattr(self, name))
            if not self.hidden or not all(isinstance(h, int) and h > 0 for h in self.hidden):
                raise SamplerError(f"{where}.hidden must be a list of positive widths")

    @property
    def label(self) -> str:
        return str(self.options.kind)

    def _build(self, features: int) -> Any:
        zuko = _zuko()
        cls = zuko.flows.NSF if self.options.kind == "nsf" else zuko.flows.MAF
        # zuko may draw parts of the structure (masks that are not saved with the weights)
        # at random: build it from a fixed seed, so that a reloaded flow is the same flow.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return cls(
                features=features,
                transforms=int(self.options.transforms),
                hidden_features=tuple(int(h) for h in self.options.hidden),
            )

    def _fit(self, fit: Tensor, held: Tensor, log: TextIO | None) -> dict[str, Any]:
        o = self.options
        self.flow = self._build(fit.shape[1])
        x, xh = fit.float(), held.float()
        opt = EagerAdam(self.flow.parameters(), lr=float(o.lr))
        best_state, best, best_epoch, history = None, -math.inf, 0, []
        for epoch in range(1, int(o.epochs) + 1):
            self.flow.train()
            for idx in torch.randperm(len(x)).split(int(o.batch_size)):
                loss = -self.flow().log_prob(x[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.flow.eval()
            with torch.no_grad():
                score = float(torch.cat([self.flow().log_prob(b) for b in xh.split(4096)]).mean())
            history.append(round(score, 4))
            if log is not None:
                print(f"  flow: epoch {epoch}, held-out log-likelihood {score:.3f}", file=log)
            if score > best:
                best, best_epoch = score, epoch
                best_state = copy.deepcopy(self.flow.state_dict())
            elif epoch - best_epoch >= int(o.patience):
                break
        if best_state is None:
            raise SamplerError(
                "the flow's held-out log-likelihood was never finite; check the codes"
            )
        self.flow.load_state_dict(best_state)
        self.flow.eval()
        return {
            "best_epoch": best_epoch,
            "held_out_log_likelihood": round(best, 4),
            "history": history,
            "selection": "epoch with the highest held-out log-likelihood (standardised codes)",
        }

    def _draw(self, n: int, t: float) -> Tensor:
        dist = self.flow()
        u = dist.base.sample((n,)) * t
        return dist.transform.inv(u).double()

    def _save(self, folder: Path) -> list[Path]:
        save_weights(folder / "flow.safetensors", self.flow)
        return [folder / "flow.safetensors"]

    def _load(self, folder: Path, open_run: OpenRun | None) -> None:
        assert self.mean is not None
        self.flow = self._build(int(self.mean.shape[0]))
        load_weights(folder / "flow.safetensors", self.flow)
        self.flow.eval()


class TwoStageSampler(Sampler):
    """The two-stage VAE of Dai & Wipf (2019): a second VAE p(u) p(z|u) on the codes.

    The second stage is an ordinary vaekit run in ``RUN/samplers/two-stage/run`` (MLP
    encoder and decoder, a Gaussian posterior and prior, a Gaussian likelihood with a
    learned scale: the paper's learned gamma, per dimension here), trained by vaekit's
    trainer on the codes written to ``codes.npz`` beside it, with the held-out codes as
    its validation split and the best validation ELBO kept. Samples: u ~ N(0, I) (scaled
    by ``temperature``), decoded to the mean of p(z|u). Dai & Wipf use a second latent
    as wide as the first (``latent_dim: 0`` means that).
    """

    name = "two-stage"
    summary = "second VAE on the codes (Dai & Wipf 2019)"

    @dataclass
    class Options:
        # Width of the second latent u (0: as wide as the codes, as Dai & Wipf).
        latent_dim: int = 0
        hidden: list[int] = field(default_factory=lambda: [512, 512])
        epochs: int = 100
        patience: int = 10
        batch_size: int = 128
        lr: float = 1e-3

        def validate(self, where: str) -> None:
            if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int):
                raise SamplerError(f"{where}.latent_dim must be an integer")
            if self.latent_dim < 0:
                raise SamplerError(f"{where}.latent_dim must be >= 0, got {self.latent_dim}")
            for name in ("epochs", "patience", "batch_size", "lr"):
                _positive(f"{where}.{name}", getattr(self, name))
            if not self.hidden or not all(isinstance(h, int) and h > 0 for h in self.hidden):
                raise SamplerError(f"{where}.hidden must be a list of positive widths")

    # Set by whoever fits it (vaekit.samplers.fit_sampler): where the second run goes, the
    # trainer that trains it (vaekit.train.fit) and how to load it (vaekit.rundir.load).
    folder: Path
    train_run: TrainRun
    open_run: OpenRun

    def _fit(self, fit: Tensor, held: Tensor, log: TextIO | None) -> dict[str, Any]:
        o = self.options
        folder = self.folder
        if (folder / "run").exists():
            shutil.rmtree(folder / "run")
        folder.mkdir(parents=True, exist_ok=True)
        codes = folder / "codes.npz"
        with atomic_write(codes, "wb") as f:
            np.savez(
                f,
                train=fit.float().numpy(),
                valid=held.float().numpy(),
                test=held.float().numpy(),
            )
        hidden = "[" + ",".join(str(int(h)) for h in o.hidden) + "]"
        cfg = load_config(
            None,
            [
                f"data.name={codes}",
                "data.valid_fraction=0",
                f"model.latent_dim={int(o.latent_dim) or fit.shape[1]}",
                f"model.encoder={{name: mlp, hidden: {hidden}, activation: relu}}",
                "model.likelihood={name: gaussian, sigma: learned}",
                "objective.name=elbo",
                f"train.epochs={int(o.epochs)}",
                f"train.patience={int(o.patience)}",
                f"train.batch_size={int(o.batch_size)}",
                f"train.lr={float(o.lr)}",
                f"train.seed={int(torch.randint(0, 2**31 - 1, ()).item())}",
            ],
        )
        # RUN/samplers/NAME/run lies in RUN's own samplers/ folder: the sampler's to write.
        self.train_run(
            cfg,
            folder / "run",
            progress=False,
            log=log if log is not None else io.StringIO(),
            _within_run=True,
        )
        self.second = self.open_run(folder / "run", weights="best")
        rows = self.second.metrics
        best = max(rows, key=lambda r: r.get("valid", {}).get("elbo", -math.inf))
        return {
            "second_stage_run": "run",
            "epochs": len(rows),
            "best_epoch": int(best["epoch"]),
            "held_out_elbo": round(float(best["valid"]["elbo"]), 4),
        }

    def _draw(self, n: int, t: float) -> Tensor:
        u = tempered(self.second.prior, t).sample((n,))
        return self.second.generate(u).double()

    def _save(self, folder: Path) -> list[Path]:
        # Written as it was fitted: the codes, and the second stage's run directory.
        return [folder / "codes.npz", folder / "run"]

    def _load(self, folder: Path, open_run: OpenRun | None) -> None:
        if open_run is None:
            raise SamplerError(
                f"{folder}: a two-stage sampler is a run directory; load it with its run "
                "(run.sampler('two-stage'))"
            )
        self.folder = folder
        self.second = open_run(folder / "run", weights="best")


# Every sampler by name: `vaekit sample RUN --sampler NAME`, run.sampler(NAME).
SAMPLERS: dict[str, type[Sampler]] = {
    s.name: s for s in (PriorSampler, GMMSampler, FlowSampler, TwoStageSampler)
}


def sampler_class(name: str) -> type[Sampler]:
    cls = SAMPLERS.get(name)
    if cls is None:
        hint = difflib.get_close_matches(str(name), list(SAMPLERS), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SamplerError(f"unknown sampler {name!r}{extra}; one of {', '.join(SAMPLERS)}")
    return cls


def check_unconditional(num_classes: int, name: str) -> None:
    """A SamplerError for a post-hoc sampler of a conditional model (``num_classes`` > 0)."""
    if num_classes:
        raise SamplerError(
            f"the {name} sampler models the codes without their labels, so it cannot feed a "
            "conditional model's decoder; sample a conditional model from its prior "
            "(--sampler prior) with --label"
        )


def saved_samplers(run_dir: Path) -> list[str]:
    """The samplers fitted and saved in a run directory, in :data:`SAMPLERS` order."""
    base = Path(run_dir) / SAMPLERS_DIR
    return [n for n in SAMPLERS if (base / n / SAMPLER_FILE).is_file()]


def sampler_names(names: Sequence[str] | None) -> list[str]:
    """Sampler names checked against :data:`SAMPLERS` (None: all of them)."""
    if names is None:
        return list(SAMPLERS)
    for n in names:
        sampler_class(n)
    return list(dict.fromkeys(names))
