"""Post-hoc latent samplers: generate from a trained run with a density fitted to its codes.

A model trained without a prior (the plain autoencoder) or whose posterior does not fill
its prior (the aggregate-posterior "holes" of a VAE) generates badly from p(z). Ghosh et
al. (2020) fit a density to the training codes after training ("ex-post density
estimation"); Dai & Wipf (2019) fit a second VAE to them. Each sampler here does one of
those, on the posterior means of the run's training split, and is saved in the run:

=============  ============================================================================
``prior``      the model's own p(z) (nothing to fit); ``temperature`` scales its spread
``gmm``        a Gaussian mixture (scikit-learn, full covariances); the number of
               components is the candidate whose mixture gives held-out codes the highest
               log-likelihood
``flow``       a neural spline flow (zuko's NSF; ``kind: maf`` for a MAF), trained by
               maximum likelihood with early stopping on held-out codes (``pip install
               "vaekit[flows]"``)
``two-stage``  the two-stage VAE of Dai & Wipf (2019): a second VAE trained on the codes
               by vaekit's own trainer (a run directory of its own); samples are its
               decoded prior draws
=============  ============================================================================

Layout: ``RUN/samplers/NAME/sampler.json`` (what was fitted, on which weights, the
selection scores) beside the fitted parameters. Codes are standardised per dimension
before fitting (and samples mapped back), so one set of defaults serves any code scale.
Held-out codes are the run's validation split when it has one, else a seeded 10% of the
training split. A sampler records a digest of the weights it was fitted on; loaded
with other weights (the run trained on) it is refitted, or refused with ``fit=False``.

Fitting trains (the two-stage sampler with vaekit's own trainer), so this module lies above
the trainer; the samplers themselves and their files are :mod:`vaekit.latent_samplers`,
and a loaded run (:meth:`vaekit.rundir.Run.sampler`) reads the ones fitted here.

Example:
    >>> import vaekit
    >>> run = vaekit.load("runs/ae")                           # doctest: +SKIP
    >>> gmm = load_sampler(run, "gmm")                         # fits on first use  # doctest: +SKIP
    >>> x = run.sample(64, sampler="gmm")                      # doctest: +SKIP
    >>> z = run.sampler("gmm").sample(100, temperature=0.8)    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TextIO

import torch

import vaekit.evaluate as evaluate  # a module: tests spy on evaluate.latent_means
from vaekit.data import Dataset
from vaekit.data.core import hold_out_validation, model_view
from vaekit.errors import UsageError
from vaekit.latent_samplers import (
    SAMPLER_FILE,
    SAMPLERS,
    SAMPLERS_DIR,
    Codes,
    FlowSampler,
    GMMSampler,
    PriorSampler,
    Sampler,
    SamplerError,
    TwoStageSampler,
    check_unconditional,
    model_digest,
    sampler_class,
    sampler_names,
    sampler_options,
    saved_samplers,
)
from vaekit.rundir import Run, load, saved_sampler
from vaekit.train import fit as train_fit
from vaekit.validate import short

__all__ = [
    "SAMPLERS",
    "SAMPLERS_DIR",
    "SamplerError",
    "Sampler",
    "PriorSampler",
    "GMMSampler",
    "FlowSampler",
    "TwoStageSampler",
    "Codes",
    "latent_codes",
    "weights_digest",
    "fit_sampler",
    "load_sampler",
    "saved_samplers",
    "sampler_names",
]

# Held-out share of the training codes when the run has no validation split.
HELD_OUT = 0.1


def weights_digest(run: Run) -> str:
    """sha256 of the loaded model's weights: which weights a sampler was fitted on."""
    return model_digest(run.model)


def latent_codes(run: Run, dataset: Dataset | None = None, seed: int = 0) -> Codes:
    """The posterior means of the training split (and of the held-out codes, see the module)."""
    ds = dataset if dataset is not None else run.dataset()
    # The images the encoder saw: a dynamically binarized run's training split is grey.
    # Before the hold-out, so that the held-out codes are of binary images too.
    ds = dataclasses.replace(
        ds, train=model_view(ds.train, run.config.data.binarize, run.config.train.seed)
    )
    source = "validation split"
    if ds.valid is None or len(ds.valid) < 2:
        ds = hold_out_validation(dataclasses.replace(ds, valid=None), HELD_OUT, seed)
        source = f"seeded {HELD_OUT:.0%} of the training split"
    assert ds.valid is not None
    fit = evaluate.latent_means(run, ds.train.x)
    held = evaluate.latent_means(run, ds.valid.x)
    for what, z in (("training", fit), ("held-out", held)):
        if not bool(torch.isfinite(z).all()):
            raise SamplerError(f"the {what} codes of {run.dir} are not all finite; retrain the run")
    return Codes(fit, held, f"{len(fit)} training codes; held out: {len(held)}, the {source}")


def fit_sampler(
    run: Run,
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    dataset: Dataset | None = None,
    seed: int = 0,
    log: TextIO | None = None,
) -> Sampler:
    """Fit the sampler ``name`` on the run's codes and save it in ``RUN/samplers/NAME``."""
    cls = sampler_class(name)
    if not cls.needs_fit:
        raise SamplerError(f"the {name} sampler is the model's own p(z): there is nothing to fit")
    check_unconditional(run.num_classes, name)
    sampler = cls(sampler_options(cls.Options, dict(options or {}), f"the {name} sampler"))
    folder = run.dir / SAMPLERS_DIR / name
    # A fit that stops half way must not leave the old description beside new parameters.
    (folder / SAMPLER_FILE).unlink(missing_ok=True)
    if isinstance(sampler, TwoStageSampler):
        # Its second stage is a vaekit run: trained by the trainer, loaded as a run.
        sampler.folder, sampler.train_run, sampler.open_run = folder, train_fit, load
    if log is not None:
        print(f"fitting the {name} sampler of {run.dir} ...", file=log)
    sampler.fit(latent_codes(run, dataset, seed), log=log, seed=seed)
    written = sampler.save(
        folder,
        {
            "weights": run.weights,
            "weights_epoch": run.weights_epoch,
            "weights_sha256": weights_digest(run),
        },
    )
    if log is not None:
        # One line per file written, as every command prints them.
        print(f"saved the {sampler.label} sampler", file=log)
        for path in written:
            print(f"wrote {path}", file=log)
    return sampler


def load_sampler(
    run: Run,
    name: str,
    *,
    fit: bool | str = "auto",
    dataset: Dataset | None = None,
    options: Mapping[str, Any] | None = None,
    log: TextIO | None = None,
) -> Sampler:
    """The sampler ``name`` of a run: the saved one when it was fitted on the weights now
    loaded (:func:`vaekit.rundir.saved_sampler`); else (``fit="auto"``) fitted now and
    saved; ``fit=True`` refits; ``fit=False`` refuses."""
    if not (fit is True or fit is False or fit == "auto"):
        raise UsageError(f"fit must be True, False or 'auto', got {short(fit)}")
    if fit is True and sampler_class(name).needs_fit:
        check_unconditional(run.num_classes, name)
        reason = "it has not been fitted yet"
    else:
        sampler, reason = saved_sampler(run, name, options, required=fit is False)
        if sampler is not None:
            return sampler
    if log is not None and fit != "auto":
        print(f"refitting the {name} sampler: {reason}", file=log)
    return fit_sampler(run, name, options, dataset=dataset, log=log)
