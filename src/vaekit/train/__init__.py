"""Training: the one loop, checkpoints and distributed helpers."""

from vaekit.train.loop import TrainingError, evaluate_split, fit

__all__ = ["TrainingError", "fit", "evaluate_split"]
