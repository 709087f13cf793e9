"""The explorer's model side: a loaded run, its encoded test set, and everything the page asks.

Inputs are checked numpy arrays (the server validates requests before they get here);
outputs are plain JSON-able data with decoded pictures as PNG bytes. Nothing here
knows about HTTP, and nothing imports the trainer: the model comes from
:func:`vaekit.load`.

Example:
    >>> ex = Explorer.from_run_dir("runs/demo")                     # doctest: +SKIP
    >>> pngs = ex.decode(np.zeros((1, ex.latent_dim), np.float32))  # doctest: +SKIP
    >>> pngs[0][:4]                                                 # doctest: +SKIP
    b'\\x89PNG'
"""

from __future__ import annotations

import os
import threading
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.distributions import Distribution

from vaekit._version import __version__
from vaekit.data import Split
from vaekit.distributions.codes import CodeHead, shown_head
from vaekit.errors import UsageError
from vaekit.evaluate import posterior_moments
from vaekit.hierarchy import TopLayer
from vaekit.latent_samplers import PriorSampler, Sampler, SamplerError, saved_samplers
from vaekit.rundir import Run, load, part_labels
from vaekit.serve.imaging import MAX_UPLOAD_BYTES, MAX_UPLOAD_SIDE, tile, to_model_input, to_png

__all__ = ["Explorer", "LIMITS", "PRIOR_MASSES"]

# Bounds on every request, in one place: the server validates against them and the page
# reads them from /api/info so that it never asks for more.
LIMITS: dict[str, int] = {
    "max_decode": 256,
    "grid_min": 2,
    "grid_max": 32,
    "max_steps": 32,
    "max_samples": 64,
    "prior_grid_max": 96,
    "max_upload_bytes": MAX_UPLOAD_BYTES,
    "max_upload_side": MAX_UPLOAD_SIDE,
}
# Probability mass inside each drawn prior contour.
PRIOR_MASSES = (0.5, 0.9, 0.99)
# Bar charts for non-image data are this many pixels high.
_BAR_HEIGHT = 32


class Explorer:
    """A trained run prepared for interactive use.

    The test set (at most ``max_points`` examples, a fixed subset) is encoded once to
    the posterior means that the latent map draws. All model calls hold one lock:
    requests arrive on several threads, and decoding a point takes about a millisecond.
    """

    def __init__(self, run: Run, test: Split | None = None, *, max_points: int = 2000) -> None:
        self.run = run
        # A hierarchy is explored through its top layer (vaekit.hierarchy.TopLayer).
        self.top = TopLayer.of(run.model)
        self.latent_dim = self.top.dim if self.top is not None else run.latent_dim
        self.data_shape = tuple(run.data_shape)
        self.is_image = bool(run.info["data"].get("is_image", False)) and len(self.data_shape) == 3
        posterior = run.model.composition.posterior
        # Trained against a prior: any posterior with randomness or a density (VQ's one-hot).
        self.kind: Literal["vae", "autoencoder"] = (
            "vae" if posterior.stochastic or posterior.density else "autoencoder"
        )
        # A discrete posterior's head: z <-> code indices, for the code editor.
        head = run.model.encoder.head
        self.code_head: CodeHead | None = (
            shown_head(head) if isinstance(head, CodeHead) else None  # digits where K is huge
        )
        self.labels_of_parts = part_labels(run.config)
        self._lock = threading.Lock()
        self._prior_samples: Tensor | None = None

        if test is not None and run.num_classes and test.y is None:
            raise UsageError(
                "this is a conditional model, but the test split has no labels to encode it with"
            )
        n = 0 if test is None else min(len(test), max_points)
        if test is not None and len(test) > n:
            # A fixed subset so that point indices mean the same thing on every start.
            idx = np.sort(np.random.default_rng(0).choice(len(test), size=n, replace=False))
            test = Split(test.x[idx], None if test.y is None else test.y[idx])
        self.x = test.x[:n].float() if test is not None else torch.zeros(0, *self.data_shape)
        self.labels = test.y[:n] if (test is not None and test.y is not None) else None
        self.codes = self._encode_all(self.x, self.labels)
        # The code indices (N, positions) of the test points, for a discrete posterior.
        self.code_indices = (
            self.code_head.codes(torch.from_numpy(self.codes).to(run.device)).cpu().numpy()
            if self.code_head is not None
            else None
        )
        self._data_lo, self._data_hi = self._data_range(self.x)
        self.dark_background, self.ink_fraction = self._ink_statistics(self.x)
        self.pca_mean, self.pca_components, self.pca_explained = self._pca(self.codes)
        self.samplers = self._load_samplers()

    def _load_samplers(self) -> dict[str, Sampler]:
        """The prior and every post-hoc sampler saved in the run and fitted on its weights
        (none is fitted here: a fit can take minutes, too long for a page to wait)."""
        out: dict[str, Sampler] = {"prior": PriorSampler(self._prior())}
        # Post-hoc samplers draw the whole code; a conditional model's decoder needs a
        # label they do not give, and a hierarchy is explored by its top layer only.
        if self.run.num_classes or self.top is not None:
            return out
        for name in saved_samplers(self.run.dir):
            try:
                out[name] = self.run.sampler(name)
            except SamplerError:
                continue  # stale (fitted on other weights): `vaekit fit-sampler` refits it
        return out

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        data_dir: str | None = None,
        device: str = "cpu",
        max_points: int = 2000,
        data_path: str | None = None,
        allow_changed_data: bool = False,
    ) -> Explorer:
        """Load a run with :func:`vaekit.load` and encode its test split (``data_path``:
        where moved data are now; ``allow_changed_data``: see :meth:`vaekit.Run.dataset`)."""
        run = load(run_dir, device=device)
        ds = run.dataset(data_dir, path=data_path, allow_changed=allow_changed_data)
        return cls(run, ds.test, max_points=max_points)

    # -- set-up ---------------------------------------------------------------------------------

    def _encode_all(self, x: Tensor, y: Tensor | None) -> np.ndarray:
        if self.top is not None or self.code_head is not None:
            # A hierarchy is mapped by its top layer, q(z_L | x)'s means; a discrete
            # posterior by its most probable code, not a mean of codes.
            out = []
            for i in range(0, len(x), 1000):
                yb = None if (y is None or not self.run.num_classes) else y[i : i + 1000]
                q = self._posterior(self.run.encode(x[i : i + 1000], yb))
                z = self.run.model.point(q)
                out.append(z.float().cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)
        # The posterior means `vaekit encode` writes and the plots draw.
        labels = y if self.run.num_classes else None
        return posterior_moments(self.run.model, x, labels).mean.numpy()

    def _data_range(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature range used to draw non-image examples as bar charts."""
        d = int(np.prod(self.data_shape))
        if len(x) == 0:
            return np.zeros(d, np.float32), np.ones(d, np.float32)
        flat = x.reshape(len(x), -1).cpu().numpy()
        lo, hi = flat.min(0), flat.max(0)
        return lo, np.where(hi > lo, hi, lo + 1.0)

    def _ink_statistics(self, x: Tensor) -> tuple[bool, float]:
        """Background colour and digit size of the training pictures, to prepare uploads alike."""
        if not self.is_image or self.data_shape[0] != 1 or len(x) == 0:
            return True, 20 / 28
        a = x[:300, 0].cpu().numpy()
        border = np.concatenate(
            [a[:, 0].ravel(), a[:, -1].ravel(), a[:, :, 0].ravel(), a[:, :, -1].ravel()]
        )
        dark = float(np.median(border)) < 0.5
        ink = a if dark else 1.0 - a
        h, w = a.shape[1:]
        sizes = []
        for img in ink:
            rows, cols = np.nonzero(img > 0.1 * max(float(img.max()), 1e-6))
            if len(rows):
                sizes.append(
                    max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) / min(h, w)
                )
        frac = float(np.median(sizes)) if sizes else 20 / 28
        return dark, float(np.clip(frac, 0.3, 1.0))

    def _pca(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """The two leading principal directions of the codes (orthonormal rows)."""
        d = self.latent_dim
        mean = codes.mean(0) if len(codes) else np.zeros(d, np.float32)
        comps = np.eye(max(d, 2), dtype=np.float64)[:2, :d]
        explained = [1.0, 0.0] if d == 1 else [0.5, 0.5]
        if d >= 2 and len(codes) >= 3:
            centred = (codes - mean).astype(np.float64)
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            if s[1] > 1e-12:
                comps = vt[:2]
                # A fixed sign (largest entry positive) so the picture does not flip between starts.
                signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(1)])
                comps = comps * signs[:, None]
                total = float((s**2).sum())
                explained = [float(s[0] ** 2 / total), float(s[1] ** 2 / total)]
        return mean.astype(np.float64), comps.astype(np.float64), explained

    def _posterior(self, q: Distribution) -> Distribution:
        return self.top.posterior(q) if self.top is not None else q

    def _prior(self) -> Distribution:
        return self.top.prior() if self.top is not None else self.run.prior

    def _full(self, z: Tensor) -> Tensor:
        """The model's latent vector for a code of the explored space."""
        return self.top.complete(z) if self.top is not None else z

    # -- facts for the page -----------------------------------------------------------------------

    @property
    def has_prior(self) -> bool:
        """Whether the model was trained against its prior (not so for a plain autoencoder)."""
        return self.kind == "vae"

    def class_names(self) -> list[str]:
        names = self.run.info["data"].get("class_names")
        k = max(
            self.run.num_classes,
            int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0,
        )
        if isinstance(names, list) and len(names) >= k:
            return [str(s) for s in names[:k]]
        return [str(i) for i in range(k)]

    def slider_ranges(self) -> list[list[float]]:
        """Per latent dimension: the prior's +-3 sd (a VAE) joined with the codes' range, padded."""
        out = []
        for k in range(self.latent_dim):
            lo, hi = (-3.0, 3.0) if self.has_prior else (np.inf, -np.inf)
            if len(self.codes):
                c = self.codes[:, k]
                pad = 0.1 * float(c.max() - c.min() + 1e-6)
                lo, hi = min(lo, float(c.min()) - pad), max(hi, float(c.max()) + pad)
            if not np.isfinite(lo) or hi - lo < 1e-6:
                lo, hi = -3.0, 3.0
            out.append([round(lo, 4), round(hi, 4)])
        return out

    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out; served as /api/info."""
        data = self.run.info["data"]
        h, w = self.display_size()
        return {
            "version": __version__,
            "run": self.run.dir.resolve().name,
            "description": self.run.config.description,
            "dataset": data.get("name"),
            "kind": self.kind,
            # Each part as it labels itself (vaekit.rundir.part_labels).
            "posterior": self.labels_of_parts["posterior"],
            "prior": self.labels_of_parts["prior"],
            "likelihood": self.labels_of_parts["likelihood"],
            "latent_dim": self.latent_dim,
            # Which latent the map and sliders are (None: the whole latent of one layer).
            "layer": self.top.describe() if self.top is not None else None,
            "data_shape": list(self.data_shape),
            "is_image": self.is_image,
            "image_size": [h, w],
            "num_classes": self.run.num_classes,
            "class_names": self.class_names(),
            "has_prior": self.has_prior,
            # Where sample codes may come from: the prior, then fitted post-hoc samplers.
            "samplers": [{"name": k, "label": v.label} for k, v in self.samplers.items()],
            "points": len(self.codes),
            "labelled": self.labels is not None,
            "pca": {
                "mean": _rounded(self.pca_mean),
                "components": _rounded(self.pca_components),
                "explained": [round(e, 4) for e in self.pca_explained],
            },
            "slider_range": self.slider_ranges(),
            # A discrete posterior's code grid (None for continuous latents).
            "codes": None
            if self.code_head is None
            else {
                "positions": self.code_head.space.positions,
                "codes": self.code_head.space.codes,
                "grid": list(self.code_head.space.grid),
            },
            "z_default": self._z_default(),
            "limits": dict(LIMITS),
        }

    def _z_default(self) -> Any:
        """Where the marker starts: the prior's centre, the codes' mean for a plain
        autoencoder, the first test point's code for discrete latents (0 is no code)."""
        if self.code_head is not None and len(self.codes):
            return _rounded(self.codes[0])
        return [0.0] * self.latent_dim if self.has_prior else _rounded(self.pca_mean)

    def points(self) -> dict[str, Any]:
        """The encoded test set (posterior means) and its labels; served as /api/points."""
        out = {
            "z": _rounded(self.codes),
            "labels": None if self.labels is None else [int(v) for v in self.labels],
        }
        if self.code_indices is not None:  # a discrete posterior's code indices per point
            out["codes"] = self.code_indices.tolist()
        return out

    # -- pictures ------------------------------------------------------------------------------

    def display_size(self) -> tuple[int, int]:
        if self.is_image:
            return int(self.data_shape[1]), int(self.data_shape[2])
        d = int(np.prod(self.data_shape))
        return _BAR_HEIGHT, d * max(1, -(-_BAR_HEIGHT // d))

    def _pixels(self, x: Tensor) -> np.ndarray:
        """Model outputs or inputs ``(N, *shape)`` -> uint8 ``(N, h, w[, 3])`` for display."""
        a = x.detach().float().cpu().numpy().reshape(len(x), *self.data_shape)
        if self.is_image:
            a = a[:, 0] if self.data_shape[0] == 1 else np.moveaxis(a, 1, -1)
            return (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        # Not an image: one bar per feature, its height the value within the test set's range.
        flat = a.reshape(len(a), -1)
        v = np.clip((flat - self._data_lo) / (self._data_hi - self._data_lo), 0.0, 1.0)
        rows = np.arange(_BAR_HEIGHT)[::-1][None, :, None] + 0.5
        bars = (rows < v[:, None, :] * _BAR_HEIGHT).astype(np.uint8) * 255
        reps = max(1, -(-_BAR_HEIGHT // flat.shape[1]))
        return np.repeat(bars, reps, axis=2)

    def _labels(self, label: int | None, n: int) -> Tensor | None:
        if not self.run.num_classes:
            if label is not None:
                raise UsageError(
                    "label is only for a conditional model; this one is not conditional"
                )
            return None
        if label is None or not 0 <= int(label) < self.run.num_classes:
            raise UsageError(f"a conditional model needs a label in 0..{self.run.num_classes - 1}")
        return torch.full((n,), int(label), dtype=torch.long, device=self.run.device)

    def _decode_pixels(self, z: np.ndarray, label: int | None) -> np.ndarray:
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.run.device)
        with self._lock:
            x = self.run.decode(self._full(zt), self._labels(label, len(zt))).mean
        return self._pixels(x)

    def decode(self, z: np.ndarray, label: int | None = None) -> list[bytes]:
        """Decode latent vectors ``(N, latent_dim)``: one PNG of the mean of p(x|z) each."""
        return [to_png(p) for p in self._decode_pixels(z, label)]

    def codes_of(self, z: np.ndarray) -> list[list[int]] | None:
        """The code indices of latent vectors ``(N, latent_dim)`` (None for continuous latents)."""
        if self.code_head is None:
            return None
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.run.device)
        with self._lock:
            return [[int(c) for c in row] for row in self.code_head.codes(zt).cpu()]

    def decode_codes(
        self, codes: np.ndarray, label: int | None = None
    ) -> tuple[np.ndarray, list[bytes]]:
        """The z of code grids ``(N, positions)`` (integers) and their decoded pictures."""
        if self.code_head is None:
            raise ValueError("this run's latents are continuous: there are no codes to set")
        idx = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=self.run.device)
        with self._lock, torch.no_grad():
            z = self.code_head.embed(idx).float().cpu().numpy()
        return z, self.decode(z, label)

    def plane_points(
        self,
        origin: np.ndarray,
        axes: np.ndarray,
        bounds: tuple[float, float, float, float],
        n: int,
    ) -> np.ndarray:
        """Latent vectors at the centres of an ``n x n`` grid over ``bounds`` of a plane.

        The plane is ``z(u, v) = origin + u * axes[0] + v * axes[1]``; rows run from the
        top of the map (largest v) down, columns from left to right, like the pictures.
        """
        x0, x1, y0, y1 = bounds
        us = x0 + (np.arange(n) + 0.5) * (x1 - x0) / n
        vs = y1 - (np.arange(n) + 0.5) * (y1 - y0) / n
        uu, vv = np.meshgrid(us, vs)
        z = origin[None] + uu.reshape(-1, 1) * axes[0][None] + vv.reshape(-1, 1) * axes[1][None]
        return z.astype(np.float32)

    def grid(
        self,
        origin: np.ndarray,
        axes: np.ndarray,
        bounds: tuple[float, float, float, float],
        n: int,
        label: int | None = None,
    ) -> bytes:
        """One PNG mosaic of ``n x n`` decoded pictures covering ``bounds`` edge to edge."""
        z = self.plane_points(origin, axes, bounds, n)
        return to_png(tile(self._decode_pixels(z, label), n))

    def interpolate(
        self, za: np.ndarray, zb: np.ndarray, steps: int, label: int | None = None
    ) -> tuple[np.ndarray, list[bytes]]:
        """``steps`` decoded pictures on the straight line from ``za`` to ``zb`` (both ends included)."""
        t = np.linspace(0.0, 1.0, steps, dtype=np.float64)[:, None]
        z = ((1 - t) * za[None] + t * zb[None]).astype(np.float32)
        return z, self.decode(z, label)

    def test_example(self, index: int) -> bytes:
        """The picture of one test point of the map."""
        return to_png(self._pixels(self.x[index : index + 1])[0])

    def sample(
        self,
        n: int,
        label: int | None = None,
        seed: int = 0,
        sampler: str = "prior",
        temperature: float = 1.0,
    ) -> tuple[np.ndarray, list[bytes]]:
        """``n`` codes from ``sampler`` (the prior, or a fitted post-hoc sampler of the run;
        seeded, at ``temperature``) and their decoded pictures."""
        if sampler not in self.samplers:
            raise ValueError(
                f"no sampler {sampler!r} in this run; it has {', '.join(self.samplers)} "
                f"(fit one with `vaekit fit-sampler RUN --sampler {sampler}`)"
            )
        with self._lock, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = self.samplers[sampler].sample(n, temperature).float().cpu().numpy()
        return z, self.decode(z, label)

    def encode_picture(
        self,
        img: Image.Image,
        label: int | None = None,
        *,
        fit: bool = True,
        invert: bool | Literal["auto"] = "auto",
    ) -> dict[str, Any]:
        """Where an uploaded picture lands: q(z|x)'s mean and sd, the input as the model saw it, its reconstruction."""
        x, flipped = to_model_input(
            img,
            self.data_shape,
            fit=fit,
            invert=invert,
            dark_background=self.dark_background,
            ink_fraction=self.ink_fraction,
        )
        xt = torch.from_numpy(x[None]).to(self.run.device)
        out: dict[str, Any] = {}
        with self._lock:
            y = self._labels(label, 1)
            if self.top is not None or self.code_head is not None:
                q = self._posterior(self.run.encode(xt, y))
                # A discrete posterior lands on its most probable code (with its indices).
                mean = self.run.model.point(q)
                std = q.variance.clamp_min(0).sqrt()
                if self.code_head is not None:
                    out["codes"] = [int(c) for c in self.code_head.codes(mean)[0].cpu()]
            else:
                moments = posterior_moments(self.run.model, xt, y)
                mean = moments.mean.to(xt.device)
                std = moments.variance.clamp_min(0).sqrt()
            recon = self.run.decode(self._full(mean), y).mean
        return out | {
            "z": _rounded(mean[0].cpu().numpy()),
            "std": _rounded(std[0].cpu().numpy()),
            "input": to_png(self._pixels(xt)[0]),
            "reconstruction": to_png(self._pixels(recon)[0]),
            "inverted": flipped,
        }

    # -- the prior's contours ---------------------------------------------------------------------

    def prior_density(
        self,
        origin: np.ndarray,
        axes: np.ndarray,
        bounds: tuple[float, float, float, float],
        n: int,
    ) -> dict[str, Any]:
        """Log-density of the prior in the map's plane on an ``n x n`` grid, with contour levels.

        With two latent dimensions the plane is the whole latent space and the density is
        exact (``prior.log_prob``). With more, the map shows a projection, so the density is
        that of the projected prior: a Gaussian KDE of 2,000 seeded prior draws. The levels
        are the log-densities enclosing :data:`PRIOR_MASSES` of the prior's mass.
        """
        if not self.has_prior:
            raise UsageError(
                "this run is a plain autoencoder: it was trained without a prior, so there are no contours"
            )
        if self.code_head is not None:
            raise ValueError(
                "this run's latents are discrete codes: its prior is a distribution over codes, "
                "with no density on a plane of the latent space"
            )
        if np.linalg.matrix_rank(axes.astype(np.float64), tol=1e-9) < 2:
            raise UsageError("the plane's two axes must point in different directions")
        grid_z = self.plane_points(origin, axes, bounds, n)
        prior = self._prior()
        with self._lock:
            if self._prior_samples is None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(12345)
                    self._prior_samples = prior.sample((2000,)).float().cpu()
            samples = self._prior_samples
            if self.latent_dim == 2:
                dev = self.run.device
                logp = prior.log_prob(torch.from_numpy(grid_z).to(dev)).float().cpu().numpy()
                sample_logp = prior.log_prob(samples.to(dev)).float().cpu().numpy()
                method = "exact"
        if self.latent_dim != 2:
            # scipy costs ~1-3 s of start-up: imported by the one view that uses it.
            from scipy.stats import gaussian_kde

            a = axes.astype(np.float64).T  # (D, 2)
            coords, *_ = np.linalg.lstsq(
                a, (samples.numpy().astype(np.float64) - origin[None]).T, rcond=None
            )
            kde = gaussian_kde(coords)
            uv, *_ = np.linalg.lstsq(a, (grid_z.astype(np.float64) - origin[None]).T, rcond=None)
            logp = np.log(np.maximum(kde(uv), 1e-300))
            sample_logp = np.log(np.maximum(kde(coords), 1e-300))
            method = "kde"
        levels = [float(np.quantile(sample_logp, 1.0 - m)) for m in PRIOR_MASSES]
        return {
            "n": n,
            "bounds": list(bounds),
            "logp": np.round(logp.reshape(n, n), 4).tolist(),
            "levels": [round(v, 4) for v in levels],
            "masses": list(PRIOR_MASSES),
            "method": method,
        }


def _rounded(a: np.ndarray, digits: int = 4) -> Any:
    """Array -> nested lists with a few decimals (the page draws them; JSON stays small)."""
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()
