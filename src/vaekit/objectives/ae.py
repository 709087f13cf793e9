"""The plain autoencoder's loss: reconstruction only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from vaekit.objectives.base import (
    Objective,
    ObjectiveOutput,
    posterior_extras,
)
from vaekit.parts import ObjectiveAbilities

if TYPE_CHECKING:
    from vaekit.vae import VAE


class AutoencoderLoss(Objective):
    """Reconstruction loss only: -log p(x | z) at the code z (the plain autoencoder).

    With a point posterior this is the deterministic autoencoder; with a Gaussian
    posterior it is a VAE trained without its divergence (beta = 0).
    """

    # No bound: the best epoch has the lowest validation loss.
    abilities = ObjectiveAbilities(
        bound="loss", sign=-1.0, bound_label="loss", needs_density=False, needs_stochastic=False
    )

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        q = model.encode(x, y)
        z = q.rsample()
        recon = -model.decode(z, y).log_prob(x)
        aux, extra = posterior_extras(q)
        loss_b = recon if aux is None else recon + aux
        return ObjectiveOutput(loss_b.mean(), {"loss": loss_b, "recon": recon} | extra)
