"""`python -m bench [NAME ...] [--runs N]`: run benchmarks, print tables, write results/*.json.

Names: overhead upload load budget idempotency image (default: all). The ones that need the
local stack bring up an isolated bench stack (port 8100, own database and vhost) and stop it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from invoke import Exit

from bench.report import Result, show
from desbordante_ops.core.console import console, step

STACK = ("overhead", "upload", "load", "idempotency")
OFFLINE = ("budget", "image")
NAMES = (*STACK, *OFFLINE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*NAMES, []], help="benchmarks to run")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    return parser


def _runner(name: str) -> Callable[..., Result]:
    return importlib.import_module(f"bench.{name}").run


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.names or list(NAMES)
    results: list[Result] = []
    try:
        offline = [name for name in names if name in OFFLINE]
        online = [name for name in names if name in STACK]
        for name in offline:
            step(f"benchmark: {name}")
            results.append(_runner(name)(args.runs))
            show(results[-1])
        if online:
            from bench import stack

            with stack.running() as cfg:
                for name in online:
                    step(f"benchmark: {name}")
                    results.append(_runner(name)(cfg, args.runs))
                    show(results[-1])
    except Exit as exc:
        console.print(f"[red]{exc.message}[/]")
        return 1
    missed = [c.target for r in results for c in r.checks if c.met is False]
    if missed:
        console.print(f"[yellow]{len(missed)} target(s) not met: {'; '.join(missed)}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
