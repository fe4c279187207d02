"""`jaxppo render`: play episodes of a trained policy (a run folder or an exported policy file) and write them as an
animation; print each episode's return and the file written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from jaxppo.cli.flags import UsageError, as_flag_error, parse


@dataclasses.dataclass(frozen=True)
class RenderArgs:
    """Play episodes of a trained policy and write them as an animation (.gif, .mp4, or .html for Brax)."""

    run: tyro.conf.Positional[Path]
    """Run folder written by `jaxppo train`, or a policy file written by `jaxppo export`."""
    out: Path = Path("episode.gif")
    """File to write: .gif, .mp4 (pip install -e ".[video]") or .html (Brax's browser viewer)."""
    episodes: int = 1
    """Episodes shown one after another."""
    seed: int = 0
    """Key of the env resets (and of the action draws with --stochastic)."""
    stochastic: bool = False
    """Sample actions instead of acting greedily."""
    max_steps: int | None = None
    """Steps per episode at most (default: the env's time limit, at most 1000)."""
    seed_index: int = 0
    """Which seed of a multi-seed run folder."""
    fps: float = 30
    """Frames per second of the animation."""
    overwrite: bool = False
    """Replace an existing --out file."""


def render(args: RenderArgs) -> None:
    from jaxppo.render import render as render_policy

    if args.out.exists() and not args.overwrite:
        raise UsageError(f"--out {args.out}: already exists; choose another --out or pass --overwrite")
    if not args.run.exists():
        raise UsageError(f"render: {args.run} does not exist; pass a run folder (jaxppo train --out DIR) or a policy "
                         "file (jaxppo export --out FILE)")
    try:
        result = render_policy(args.run, args.out, episodes=args.episodes, seed=args.seed,
                               stochastic=args.stochastic, max_steps=args.max_steps, seed_index=args.seed_index,
                               fps=args.fps)
    except ValueError as error:
        raise flag_error(error, RenderArgs, "render") from None
    for i, (ret, length) in enumerate(zip(result.returns, result.lengths)):
        print(f"episode {i + 1}: return {ret:.2f} over {length} steps", flush=True)
    print(f"done: {result.num_frames} frames -> {result.path}", flush=True)


def flag_error(error: ValueError, args_class: type, command: str) -> UsageError:
    """A library ValueError as a one-line usage error: '--flag value: rule' when it names one of the command's
    flags ('episodes=0: ...'), else 'command: message'."""
    names = {f.name for f in dataclasses.fields(args_class)}
    if str(error).split("=", 1)[0] in names:
        return as_flag_error(error)
    return UsageError(f"{command}: {error}")


def run(argv: list[str]) -> int:
    render(parse(RenderArgs, argv, "jaxppo render"))
    return 0
