"""`jaxppo` command line: thin commands over the library (parse flags -> call the library -> print).

    jaxppo train --env CartPole-v1 --total-timesteps 500000 --seed 0 --num-seeds 1 --out runs/cartpole
    jaxppo sweep | plot | eval ...   (jaxppo COMMAND --help)

Every mistake ends with one line `jaxppo: error: ...` on stderr: exit code 2 for usage, 1 for a failed run.
Every command compiles through JAX's persistent compilation cache (jaxppo.compile_cache), turned on here, at the
entry point, and off with --no-compile-cache (anywhere on the command line) or JAXPPO_NO_COMPILE_CACHE=1.
"""

from __future__ import annotations

import sys

from jaxppo.cli.flags import EXIT_USAGE, UsageError
from jaxppo.compile_cache import DISABLE_ENV, DISABLE_FLAG, configure as configure_compile_cache

COMMANDS = {
    "train": ("jaxppo.cli.train", "train PPO, resume a run"),
    "sweep": ("jaxppo.cli.sweep", "hyperparameter settings x seeds in one compiled program"),
    "pbt": ("jaxppo.cli.pbt", "population-based training: exploit/explore inside one compiled program"),
    "plot": ("jaxppo.cli.plot", "learning curves of run folders"),
    "eval": ("jaxppo.cli.eval", "evaluate a finished run's policies"),
    "render": ("jaxppo.cli.render", "watch a trained policy: episodes as a GIF, MP4 or Brax HTML"),
    "export": ("jaxppo.cli.export", "ship a trained policy as a jax.export file that runs without jaxppo"),
}
"""The command table: name -> (module with run(argv) -> exit code, one-line description)."""

__all__ = ["COMMANDS", "UsageError", "main"]


def _usage() -> str:
    lines = ["usage: jaxppo COMMAND [flags]   (jaxppo COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:6s} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", f"every command takes {DISABLE_FLAG} (or {DISABLE_ENV}=1): compile without JAX's persistent "
              "compilation cache", "(on by default, in ~/.cache/jaxppo/jax or $XDG_CACHE_HOME/jaxppo/jax)"]
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
    no_cache = DISABLE_FLAG in argv
    argv = [arg for arg in argv if arg != DISABLE_FLAG]
    try:
        if not argv or argv[0] not in COMMANDS:
            given = f"unknown command {argv[0]!r}" if argv else "no command given"
            raise UsageError(f"{given}; commands: {', '.join(COMMANDS)} (jaxppo --help)")
        module = importlib.import_module(COMMANDS[argv[0]][0])
        configure_compile_cache(disabled=no_cache)  # before the command compiles anything
        return module.run(argv[1:])
    except UsageError as error:
        print(f"jaxppo: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("jaxppo: error: interrupted", file=sys.stderr)
        return 130
