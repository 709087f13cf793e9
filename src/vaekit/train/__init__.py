"""Training: the one loop, checkpoints, distributed helpers and fault handling."""

from vaekit.train.loop import TrainingError, TrainingInterrupted, evaluate_split, fit

__all__ = ["TrainingError", "TrainingInterrupted", "fit", "evaluate_split"]
