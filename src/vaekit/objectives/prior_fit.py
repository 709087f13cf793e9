"""A second stage that fits only the prior to the frozen encoder's posterior."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError
from vaekit.objectives.base import (
    Objective,
    ObjectiveOutput,
    kl_term,
)
from vaekit.parts import Composition, ObjectiveAbilities
from vaekit.validate import check_positive

if TYPE_CHECKING:
    from vaekit.vae import VAE


class PriorFit(Objective):
    """Fit the prior alone to the frozen encoder's posterior: VQ-VAE's second stage.

    The encoder and decoder are frozen (their parameters stop requiring gradients and they
    run in evaluation mode, so a discrete posterior gives its exact codes and a VQ
    codebook stays as it is). The loss is KL(q(z|x) || p(z)), analytic where torch has it
    and else over ``samples`` draws of z: with q fixed that is the cross-entropy
    E_q[-log p(z)] up to a constant, so every step raises the ELBO, which is reported with
    the prior being fitted (``recon`` does not move). ``vaekit train --resume RUN --stage
    prior`` runs it into ``RUN/prior``, a run of its own that starts from RUN's weights.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> from vaekit.model import build_model
        >>> model = build_model(ModelConfig(latent_dim=2, prior="mog"), (1, 8, 8))
        >>> fit = PriorFit()
        >>> sorted(fit.param_groups(model)), len(fit.param_groups(model)["model"])
        (['model'], 3)
    """

    @dataclass
    class Options:
        # Draws of z per example where the KL has no closed form.
        samples: int = 1

        def validate(self, where: str) -> None:
            check_positive(f"{where}.samples", self.samples)

    abilities = ObjectiveAbilities(bound="elbo", bound_label="ELBO", fixed=("encoder", "decoder"))

    @staticmethod
    def label(o: PriorFit.Options) -> str:
        return "prior fit" + (f" S={o.samples}" if o.samples != 1 else "")

    @staticmethod
    def check(o: PriorFit.Options, parts: Composition) -> str | None:
        if not parts.prior.learned:
            return (
                f"objective.name=prior-fit fits the prior, but {parts.names.get('prior', 'it')} "
                "has nothing to learn: choose a learned prior (mog, vamp; over codes pixelcnn, "
                "or categorical with learned: true)"
            )
        return None

    def __init__(self, samples: int = 1) -> None:
        super().__init__()
        self.samples = samples

    def loss_note(self) -> str:
        return "the KL alone (the encoder and decoder are fixed)"

    def setup(self, model: VAE) -> None:
        for module in (model.encoder, model.decoder):
            for p in module.parameters():
                p.requires_grad_(False)

    def param_groups(self, model: VAE) -> dict[str, list[nn.Parameter]]:
        self.setup(model)
        params = [p for p in model.prior_module.parameters()]
        if not params:
            raise ConfigError(
                "objective.name=prior-fit: this prior has no parameters to fit (a uniform "
                "categorical, model.prior.learned=false?); choose a learned prior"
            )
        return {"model": params}

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        modes = model.encoder.training, model.decoder.training
        model.encoder.eval()
        model.decoder.eval()
        try:
            with torch.no_grad():
                q = model.encode(x, y)
                z = q.rsample((self.samples,))
                recon = -model.decode(z, y).log_prob(x).mean(0)
            kl = kl_term(q, model.prior_given(y), z, "auto")  # p(z|y) for a prior per class
        finally:
            model.encoder.train(modes[0])
            model.decoder.train(modes[1])
        terms = {"loss": kl, "recon": recon, "kl": kl, "elbo": -(recon + kl)}
        return ObjectiveOutput(kl.mean(), terms)
