"""Command line: thin subcommands over the library.

    vaekit train --config FILE [--dataset NAME_OR_PATH] [--epochs N] [--out RUN] [--seed S] [--set k=v ...]
    vaekit train --resume RUN [--epochs N] [--patience N] [--threads N] [--allow-changed-data]
    vaekit train --resume RUN --stage prior [--epochs N] [--set model.prior.KEY=V]
    vaekit evaluate RUN [--k 5000] [--limit N] [--threads T]
    vaekit evaluate RUN --disentanglement [--quick] [--split all|test]
    vaekit plot RUN [--which NAME ...] [--out DIR]
    vaekit compare RUN_A RUN_B [--out FILE]
    vaekit curves RUN [RUN ...] [--split valid|test|train] [--out FILE]
    vaekit traversals RUN [RUN ...] [--rows 6] [--out FILE]
    vaekit summary RUN [RUN ...] [--format markdown|csv|json] [--out FILE]
    vaekit report RUN [--k K]
    vaekit sample RUN [--n 64] [--label K] [--sampler prior|gmm|flow|two-stage] [--temperature T]
    vaekit fit-sampler RUN --sampler gmm|flow|two-stage [--option KEY=VALUE ...]
    vaekit quality RUN [--sampler NAME ...] [--features domain|inception] [--n N] [--temperature T]
    vaekit reconstruct RUN [--n 16] [--seed S | --first]
    vaekit encode RUN [--split test] [--format npy|csv]
    vaekit explore RUN [--host 127.0.0.1] [--port 0|N] [--data-dir DIR]
    vaekit score RUN DATA [OOD] [--scores NAME ...] [--background RUN2] [--threshold SCORE]
    vaekit parts [KIND [NAME]] [--format text|json]
    vaekit zoo list | check [NAME ...] [--quick] [--k K] | add RUN NAME | table [--check]

Every RUN may be ``zoo:NAME``, a model of the zoo (vaekit.zoo): checked against its
SHA-256, loaded from its copy in the cache, where its outputs go unless --out says.

Commands that read a run's data again (evaluate, plot, report, reconstruct, encode,
explore) take ``--dataset PATH`` for data that have moved, and refuse data that changed
since training unless ``--allow-changed-data`` (so does ``train --resume``).

Each command is a module of :mod:`vaekit.commands` (its options beside its code); this
module parses, runs the one command asked for, and turns every failure a user can meet
into one ``error:`` line and an exit status. ``python -m vaekit`` is the same program.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

# Only light imports here: torch loads with the command's module, where main() catches a
# Ctrl-C, and `vaekit --help` loads none.
import vaekit
from vaekit.commands import COMMANDS
from vaekit.commands.args import CommandError
from vaekit.errors import VaekitError

__all__ = ["main", "build_parser", "CommandError"]


def command_module(name: str) -> ModuleType:
    """The module of command ``name`` (``vaekit.commands.<module>``), imported on first use:
    the one import of this module that waits, so that a command loads what it needs and
    no more (``vaekit train`` neither matplotlib nor the figures)."""
    return importlib.import_module(f"vaekit.commands.{COMMANDS[name][0]}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser, every command with its arguments (the CLI reference is
    generated from it). ``only``: the one command whose arguments are added (its module
    imported); the others are listed by name and one-line help alone, as ``vaekit --help``
    shows them (``only=""``: none)."""
    parser = argparse.ArgumentParser(
        prog="vaekit", description="Variational autoencoders composed from parts."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="`vaekit COMMAND --help` describes each"
    )
    for name, (_, help_line) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_line, add_help=False)
            continue
        module = command_module(name)
        p = sub.add_parser(name, help=help_line, description=module.DESCRIPTION)
        module.add_arguments(p)
    return parser


def _command_named(argv: Sequence[str]) -> str:
    """The command ``argv`` names: its first word that is not an option ("" for none)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else ""
        if word == "--":
            break
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2: a request to correct, 130: Ctrl-C).

    Every failure a user can meet prints one ``error:`` line, never a traceback: vaekit's
    own errors, running out of memory, a file that cannot be read or written, Ctrl-C at
    any moment (torch loads inside the commands, so start-up is covered too).

    Called as the program (``argv`` None: the ``vaekit`` script, ``python -m vaekit``),
    it freezes the garbage collector's objects before the process exits
    (:func:`_freeze_before_exit`); called with ``argv`` from Python, it leaves them alone.
    """
    try:
        return _main(argv)
    except VaekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # The trainer's own interruption has already said how to resume.
        if not str(e):
            print("\ninterrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(
            f"error: out of memory ({_first_line(e)}); ask for less: a smaller --n, --k, "
            "--batch-size or --max-rows",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        where = e.filename2 or e.filename
        print(f"error: {where}: {e.strerror}" if where else f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if argv is None:
            _freeze_before_exit()


def _freeze_before_exit() -> None:
    """Move every object alive now to the collector's permanent generation (``gc.freeze``).

    The interpreter's shutdown runs full collections over torch's ~170,000 objects, which
    cost every command about 0.5 s of CPU after its work is done (0.68 s against 0.15 s
    frozen, benchmarks/train_overhead.py); frozen objects are skipped. Nothing is lost:
    the commands close their files and trackers before they return, and objects freed by
    reference counting are freed as before. Only for a process about to end: in a
    long-lived one (a notebook, the test suite) frozen cycles would never be collected.
    """
    gc.freeze()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _out_of_memory(e: BaseException) -> bool:
    # torch's CPU allocator raises a RuntimeError ("can't allocate memory"), CUDA's
    # torch.OutOfMemoryError (also a RuntimeError) says "out of memory".
    text = str(e).lower()
    return isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text


@contextlib.contextmanager
def program_imports() -> Iterator[None]:
    """The program's imports of a command's modules (torch and vaekit's parts) without
    garbage collection, their objects then frozen (``gc.freeze``).

    Importing torch makes ~170,000 objects that live as long as the process and are no
    garbage, yet the collector's full passes walk them again and again as they appear:
    0.3-0.6 s of CPU per command here (``import vaekit.train.loop``: 1.55 against 0.97 s
    of user CPU). Frozen, later collections skip them, in training as at the exit
    (:func:`_freeze_before_exit`). Only for the program (``main()`` without ``argv``):
    in a notebook or the test suite a frozen cycle would never be collected.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    name = _command_named(args)
    with program_imports() if argv is None else contextlib.nullcontext():
        parser = build_parser(only=name)
    a = parser.parse_args(args)
    if a.version:
        print(vaekit.__version__)
        return 0
    if not a.command:
        parser.print_help()
        return 2
    if getattr(a, "data_dir", None):
        os.environ["VAEKIT_DATA_DIR"] = a.data_dir
    status: int = command_module(a.command).run(a)
    return status
