"""The trainer's Adam and AdamW: torch's arithmetic and state dicts, without torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from vaekit.optim import make_optimizer

TORCH = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def _train(opt_of: object, steps: int = 4) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Softplus(), torch.nn.Linear(7, 3))
    opt = opt_of(list(net.parameters()))  # type: ignore[operator]
    x = torch.randn(16, 5)
    for _ in range(steps):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()], opt


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_same_steps_and_state_as_torch(name: str) -> None:
    ours, o1 = _train(lambda ps: make_optimizer(name, ps, 1e-2, 0.1, torch.device("cpu")))
    theirs, o2 = _train(lambda ps: TORCH[name](ps, lr=1e-2, weight_decay=0.1, fused=True))
    assert isinstance(o1, TORCH[name])
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s2["state"]:
        assert all(torch.equal(s1["state"][k][n], v) for n, v in s2["state"][k].items())
    # A checkpoint written by torch's own class (older runs) loads and goes on alike.
    o1.load_state_dict(s2)
    assert o1.state_dict()["param_groups"] == s2["param_groups"]


def test_training_never_imports_dynamo() -> None:
    # torch imports torch._dynamo on an optimiser's first call only to guard against
    # torch.compile: 1.5 s of CPU on every `vaekit train` (benchmarks/train_overhead.py).
    code = """
import sys, torch
from vaekit.optim import make_optimizer
for name in ("adam", "adamw"):
    w = torch.nn.Parameter(torch.ones(3))
    o = make_optimizer(name, [w], 0.1, 0.0, torch.device("cpu"))
    o.zero_grad()
    w.square().sum().backward()
    o.step()
    o.load_state_dict(o.state_dict())
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


def test_a_torch_whose_fused_step_differs_takes_torchs_own_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The short path calls a private torch function: where its signature is not the one
    # it was written for, the step must be torch's own, with the same result.
    import importlib

    from vaekit import optim

    adam = importlib.import_module("torch.optim.adam")  # torch.optim hides its submodules

    original = adam._fused_adam

    def changed(*args: object, new_keyword: bool = False, **kw: object) -> None:
        # torch's own step calls it too (as the module's global): it still works there.
        original(*args, **kw)

    optim._fused_adam.cache_clear()
    monkeypatch.setattr(adam, "_fused_adam", changed)
    try:
        assert optim._fused_adam() is None
        ours, _ = _train(lambda ps: make_optimizer("adam", ps, 1e-2, 0.0, torch.device("cpu")))
    finally:
        optim._fused_adam.cache_clear()
    monkeypatch.undo()
    theirs, _ = _train(lambda ps: torch.optim.Adam(ps, lr=1e-2, fused=True))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert optim._fused_adam() is adam._fused_adam


def test_eager_adam_with_torchs_defaults_is_torchs_adam_without_dynamo() -> None:
    # The samplers' flows, the supervised heads, the FID domain network and the test
    # helpers build Adam with torch's defaults (no fused kernel): the same steps and state
    # as torch.optim.Adam, without its 1-1.5 s import of torch._dynamo.
    from vaekit.optim import EagerAdam

    kw = {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 5e-5}
    ours, o1 = _train(lambda ps: EagerAdam(ps, **kw))
    theirs, o2 = _train(lambda ps: torch.optim.Adam(ps, **kw))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s2["state"]:
        assert all(torch.equal(s1["state"][k][n], v) for n, v in s2["state"][k].items())


def test_vaekit_builds_no_torch_optimiser_that_imports_dynamo() -> None:
    # torch.optim's classes import torch._dynamo on their first call; vaekit's own
    # optimisers are built through vaekit.optim (EagerAdam, make_optimizer).
    from pathlib import Path

    import vaekit

    src = Path(vaekit.__file__).parent
    found = [
        f"{p.relative_to(src)}:{i}"
        for p in sorted(src.rglob("*.py"))
        if p.name != "optim.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "torch.optim.Adam(" in line or "torch.optim.AdamW(" in line
    ]
    assert found == [], found
