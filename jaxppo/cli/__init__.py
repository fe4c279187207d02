"""`jaxppo` command line: thin commands over the library (parse flags -> call the library -> print).

    jaxppo train --env CartPole-v1 --total-timesteps 500000 --seed 0 --num-seeds 1 --out runs/cartpole
    jaxppo sweep | plot | eval ...   (jaxppo COMMAND --help)

Every mistake ends with one line `jaxppo: error: ...` on stderr: exit code 2 for usage, 1 for a failed run.
"""

from __future__ import annotations

import sys

from jaxppo.cli.flags import EXIT_USAGE, UsageError

COMMANDS = {
    "train": ("jaxppo.cli.train", "train PPO, resume a run"),
    "sweep": ("jaxppo.cli.sweep", "hyperparameter settings x seeds in one compiled program"),
    "plot": ("jaxppo.cli.plot", "learning curves of run folders"),
    "eval": ("jaxppo.cli.eval", "evaluate a finished run's policies"),
}
"""The command table: name -> (module with run(argv) -> exit code, one-line description)."""

__all__ = ["COMMANDS", "UsageError", "main"]


def _usage() -> str:
    lines = ["usage: jaxppo COMMAND [flags]   (jaxppo COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:6s} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxppo` console script; returns the exit code."""
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
        from jaxppo import __version__

        print(f"jaxppo {__version__}")
        return 0
    try:
        if argv[0] not in COMMANDS:
            raise UsageError(f"unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)} (jaxppo --help)")
        module = importlib.import_module(COMMANDS[argv[0]][0])
        return module.run(argv[1:])
    except UsageError as error:
        print(f"jaxppo: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("jaxppo: error: interrupted", file=sys.stderr)
        return 130
