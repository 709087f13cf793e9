"""Optimisers (``train.optimizer``) and learning-rate schedules (``train.lr_schedule``) by
name: the registries that serve the config's choices.

Adam, AdamW, SGD and Adagrad use torch's fused kernels (one pass over every parameter,
on CPU and CUDA): for the tutorial-002 model an Adam step takes 0.4 ms fused, 1.4 ms
with foreach and 3.7 ms with the default per-tensor loop (benchmarks/README.md).
RMSprop has no fused kernel; it uses foreach.

Adam and AdamW are torch's own classes with the dynamo guards taken off their methods
(:class:`EagerAdam`, :class:`EagerAdamW`): torch imports ``torch._dynamo`` on the first
call of an optimiser's constructor and step only to keep ``torch.compile`` from tracing
them, which costs every ``vaekit train`` about 1.5 s of CPU at start and more at exit
(benchmarks/train_overhead.py). The trainer never compiles its optimiser step.

A schedule is a factor on ``train.lr`` that depends only on the epoch. Because the
factor is a pure function of the epoch, a resumed run recomputes it and stays
bit-identical; nothing about it needs to be checkpointed. ``cosine`` also depends on
``train.epochs``: extending a run with ``--resume --epochs N`` stretches its remaining
schedule (``burda`` and ``none`` do not depend on it).

Example:
    >>> sorted(OPTIMIZERS)
    ['adagrad', 'adam', 'adam-normgrad', 'adamw', 'rmsprop', 'sgd']
    >>> [round(lr_factor("burda", e, 3280), 3) for e in (1, 2, 4, 5, 3280)]
    [1.0, 0.72, 0.72, 0.518, 0.1]
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vaekit.errors import ConfigError

__all__ = [
    "OPTIMIZERS",
    "make_optimizer",
    "EagerAdam",
    "EagerAdamW",
    "AdamNormGrad",
    "SCHEDULES",
    "lr_factor",
]


def _unguarded(fn: Any) -> Any:
    """The function inside torch's lazy ``torch._disable_dynamo`` wrapper (the wrapper
    imports torch._dynamo when first called)."""
    return getattr(fn, "__wrapped__", fn)


# The keyword arguments the short path passes to torch's private fused step: the torch
# this was written against (2.13) takes exactly these. Another torch whose private
# functions differ takes torch's own step, never a call that could mean something else.
_FUSED_KEYWORDS = frozenset(
    {
        "amsgrad",
        "has_complex",
        "beta1",
        "beta2",
        "lr",
        "weight_decay",
        "eps",
        "maximize",
        "capturable",
        "differentiable",
        "decoupled_weight_decay",
    }
)


@functools.cache
def _fused_adam() -> Callable[..., None] | None:
    """torch's private fused Adam step when its signature is the one the short path calls
    (8 positional lists and scalars, then exactly :data:`_FUSED_KEYWORDS`), else None."""
    # torch.optim hides its submodules; the fused step function is private.
    fn = getattr(importlib.import_module("torch.optim.adam"), "_fused_adam", None)
    init_group = getattr(torch.optim.Adam, "_init_group", None)
    if fn is None or init_group is None:
        return None
    try:
        params = inspect.signature(fn).parameters.values()
        init = inspect.signature(init_group).parameters
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    if len(positional) != 8 or keywords != _FUSED_KEYWORDS or len(init) != 8:
        return None
    return fn


class _NoDynamo:
    """Adam/AdamW's methods without the wrappers that import torch._dynamo: the same
    arithmetic (torch's fused kernel), state and state dict as the torch class."""

    add_param_group = _unguarded(torch.optim.Optimizer.add_param_group)
    zero_grad = _unguarded(torch.optim.Optimizer.zero_grad)
    state_dict = _unguarded(torch.optim.Optimizer.state_dict)
    load_state_dict = _unguarded(torch.optim.Optimizer.load_state_dict)

    @torch.no_grad()
    def step(self: Any, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam step, as ``torch.optim.Adam.step`` takes it for fused groups."""
        fused = _fused_adam()
        if fused is None or any(
            not g["fused"] or g["differentiable"] or g["capturable"] for g in self.param_groups
        ):
            # Only the fused CPU/CUDA groups the trainer builds take the short path.
            return _unguarded(torch.optim.Adam.step)(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            lists: tuple[list[torch.Tensor], ...] = ([], [], [], [], [], [])
            has_complex = self._init_group(g, *lists)
            beta1, beta2 = g["betas"]
            fused(
                *lists,
                getattr(self, "grad_scale", None),
                getattr(self, "found_inf", None),
                amsgrad=g["amsgrad"],
                has_complex=has_complex,
                beta1=beta1,
                beta2=beta2,
                lr=g["lr"],
                weight_decay=g["weight_decay"],
                eps=g["eps"],
                maximize=g["maximize"],
                capturable=g["capturable"],
                differentiable=g["differentiable"],
                decoupled_weight_decay=g["decoupled_weight_decay"],
            )
        return loss


class EagerAdam(_NoDynamo, torch.optim.Adam):
    """``torch.optim.Adam`` that never imports torch._dynamo (see :class:`_NoDynamo`)."""


class EagerAdamW(_NoDynamo, torch.optim.AdamW):
    """``torch.optim.AdamW`` that never imports torch._dynamo (see :class:`_NoDynamo`)."""


class AdamNormGrad(EagerAdam):
    """Adam on each parameter tensor's gradient divided by its L2 norm (plus 1e-7): the
    optimiser of Tomczak & Welling's VampPrior code (``AdamNormGrad``), with which their
    published figures were trained (``train.optimizer=adam-normgrad``)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            norms = torch._foreach_norm(grads)
            torch._foreach_add_(norms, 1e-7)
            torch._foreach_div_(grads, norms)
        return super().step(closure)


Builder = Callable[[list[nn.Parameter], float, float, dict[str, Any]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, Builder] = {
    "adam": lambda ps, lr, wd, fast: EagerAdam(ps, lr=lr, weight_decay=wd, **fast),
    "adamw": lambda ps, lr, wd, fast: EagerAdamW(ps, lr=lr, weight_decay=wd, **fast),
    "adam-normgrad": lambda ps, lr, wd, fast: AdamNormGrad(ps, lr=lr, weight_decay=wd, **fast),
    # Keras' RMSprop defaults (rho=0.9, eps=1e-7), as in tutorial 001; no fused kernel.
    "rmsprop": lambda ps, lr, wd, fast: torch.optim.RMSprop(
        ps, lr=lr, alpha=0.9, eps=1e-7, weight_decay=wd, foreach=True
    ),
    "sgd": lambda ps, lr, wd, fast: torch.optim.SGD(
        ps, lr=lr, momentum=0.9, weight_decay=wd, **fast
    ),
    "adagrad": lambda ps, lr, wd, fast: torch.optim.Adagrad(ps, lr=lr, weight_decay=wd, **fast),
}


def make_optimizer(
    name: str, params: list[nn.Parameter], lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """The optimiser named in ``train.optimizer``, with fused kernels where torch has them."""
    build = OPTIMIZERS.get(name)
    if build is None:
        raise ConfigError(f"unknown optimizer {name!r}; one of {', '.join(sorted(OPTIMIZERS))}")
    fused = device.type in ("cpu", "cuda")
    fast: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    return build(params, lr, weight_decay, fast)


SCHEDULES = ("none", "cosine", "burda")


def _burda_stage(epoch: int) -> int:
    """Burda et al. (2016): stage i lasts 3**i epochs (i = 0..7, 3280 epochs in all)."""
    end, stage = 0, 0
    while True:
        end += 3**stage
        if epoch <= end:
            return stage
        stage += 1


def lr_factor(name: str, epoch: int, epochs: int) -> float:
    """The factor for 1-based ``epoch`` of ``epochs``.

    ``none``: 1. ``cosine``: from 1 down to 0.01 over the run (half a cosine).
    ``burda``: 10**(-i/7) in stage i of Burda et al.'s 3**i-epoch stages (the IWAE paper's
    schedule; stages past the 8th keep dividing).
    """
    if name == "none":
        return 1.0
    if name == "cosine":
        progress = (epoch - 1) / max(epochs - 1, 1)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if name == "burda":
        return float(10.0 ** (-_burda_stage(epoch) / 7.0))
    raise ValueError(
        f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}"
    )
