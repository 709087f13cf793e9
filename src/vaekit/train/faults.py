"""Faults from outside the loop: stop requests (SIGINT/SIGTERM) and test-only fault injection.

:class:`GracefulStop` turns SIGINT and SIGTERM into a request that the trainer honours at
the next safe point: it finishes the current step, writes a checkpoint and says how to
resume.

:class:`FaultInjector` is a test hook, inert unless ``VAEKIT_FAULT`` is set. The tests
use it to kill the trainer at named points and check that resuming gives the same
weights as an uninterrupted run::

    VAEKIT_FAULT="step@7"             SIGKILL at the 7th training step (after backward)
    VAEKIT_FAULT="checkpoint-file@2"  SIGKILL half-way through writing the 2nd trainer state
    VAEKIT_FAULT="step@30:term"       send SIGTERM to itself instead (a clean stop)

Points: ``step`` (after backward, before the optimiser step), ``epoch`` (after the
metrics line, before the checkpoint), ``checkpoint-file`` (half of trainer_state.pt
written), ``checkpoint-dir`` (checkpoint folder complete, not yet renamed into place),
``checkpoint-done`` (renamed, the run's model.safetensors not yet updated). Actions:
``kill`` (default), ``term``, ``int``. Several specs are separated by commas.

``VAEKIT_RANK_DIGEST_DIR``: when set, every rank writes ``rank-R.sha256``, the digest of
its weights at the end of training, there (the DDP test compares them).
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch
from torch import nn

__all__ = ["FAULT_POINTS", "FaultInjector", "GracefulStop", "weights_digest", "write_rank_digest"]

FAULT_POINTS = ("step", "epoch", "checkpoint-file", "checkpoint-dir", "checkpoint-done")
_ACTIONS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}


class FaultInjector:
    """Kill (or signal) this process the N-th time a named point is reached.

    Example:
        >>> f = FaultInjector("step@3:term")
        >>> f.plan
        {'step': (3, 'term')}
    """

    def __init__(self, spec: str) -> None:
        self.plan: dict[str, tuple[int, str]] = {}
        self.counts: dict[str, int] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            point, _, rest = item.partition("@")
            count, _, action = rest.partition(":")
            action = action or "kill"
            if (
                point not in FAULT_POINTS
                or not count.isdigit()
                or int(count) < 1
                or action not in _ACTIONS
            ):
                raise ValueError(
                    f"VAEKIT_FAULT: bad spec {item!r}; expected POINT@N[:ACTION] with POINT one of "
                    f"{', '.join(FAULT_POINTS)}, N >= 1 and ACTION one of {', '.join(_ACTIONS)}"
                )
            self.plan[point] = (int(count), action)

    @classmethod
    def from_env(cls) -> FaultInjector | None:
        """The injector described by ``$VAEKIT_FAULT``, or None when it is unset (the normal case)."""
        spec = os.environ.get("VAEKIT_FAULT", "")
        return cls(spec) if spec.strip() else None

    def hit(self, point: str) -> None:
        """Count one pass through ``point``; act when the planned count is reached."""
        if point not in self.plan:
            return
        self.counts[point] = self.counts.get(point, 0) + 1
        count, action = self.plan[point]
        if self.counts[point] == count:
            # A signal sent to oneself is handled before the next bytecode runs.
            os.kill(os.getpid(), _ACTIONS[action])


class GracefulStop:
    """While active, SIGINT and SIGTERM only set :attr:`signum`; the loop polls it.

    A second SIGINT more than a second after the first aborts at once
    (``KeyboardInterrupt``), unless ``escalate`` is false: under torchrun the agent
    forwards the terminal's Ctrl-C, so each worker sees it twice. Outside the main
    thread signals cannot be handled, and this does nothing.
    """

    def __init__(self, escalate: bool = True) -> None:
        self.escalate = escalate
        self.signum: int | None = None
        self._since = 0.0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._since = signum, now
        elif self.escalate and signum == signal.SIGINT and now - self._since > 1.0:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def weights_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_rank_digest(module: nn.Module, rank: int) -> None:
    """Test hook: write ``$VAEKIT_RANK_DIGEST_DIR/rank-R.sha256`` when the variable is set."""
    where = os.environ.get("VAEKIT_RANK_DIGEST_DIR")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / f"rank-{rank}.sha256").write_text(weights_digest(module) + "\n")
