"""Disentangling: objectives that shape q(z), data with ground-truth factors, and the
metrics that score a representation against those factors.

- :mod:`vaekit.disentangle.objectives`: beta-TCVAE, FactorVAE, DIP-VAE I/II and the
  controlled capacity increase, registered as objectives (``objective: {name: tcvae}``).
  InfoVAE / WAE-MMD is the ELBO with ``objective.divergence: mmd`` (:mod:`vaekit.divergences`).
- :mod:`vaekit.data.dsprites`: the dSprites file (verified download) and an offline
  generator of a dSprites-like set (``dsprites-synthetic``); both carry the factors.
- :mod:`vaekit.disentangle.metrics`: the BetaVAE and FactorVAE scores, MIG, SAP and DCI
  with disentanglement_lib's protocol (``vaekit evaluate RUN --disentanglement``).
- :mod:`vaekit.disentangle.figures`: latent traversals of several runs side by side and
  the metrics as a plot.

The submodules are imported on use: the metrics need scikit-learn, the objectives do not.
"""

from __future__ import annotations

__all__: list[str] = []
