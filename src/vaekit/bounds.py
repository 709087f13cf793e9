"""The tighter bounds of Rainforth et al. (2018), MIWAE, PIWAE and CIWAE: they live with
the IWAE in :mod:`vaekit.objectives.iwae`; this module keeps their old import path."""

from vaekit.objectives.iwae import CIWAE, MIWAE, PIWAE, miwae_bound

__all__ = ["miwae_bound", "MIWAE", "CIWAE", "PIWAE"]
