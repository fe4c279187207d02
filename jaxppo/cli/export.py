"""`jaxppo export`: serialise one seed's trained policy with jax.export into a file that runs with jax alone (plus a
JSON sidecar); print what was written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from jaxppo.cli.flags import UsageError, parse
from jaxppo.cli.render import flag_error


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    """Serialise a trained policy with jax.export: OUT runs without jaxppo (jax.export.deserialize), OUT.json
    describes its inputs and outputs."""

    run: tyro.conf.Positional[Path]
    """Run folder written by `jaxppo train`."""
    out: Path = Path("policy.jaxexport")
    """File to write; the sidecar is OUT.json."""
    seed_index: int = 0
    """Which seed of a multi-seed run."""
    stochastic: bool = False
    """Export a sampling policy (it takes PRNG key data as its last input) instead of the greedy one."""
    batch: str = "dynamic"
    """Observations per call: dynamic (any number) or a fixed positive number."""
    platforms: str = "cpu,cuda"
    """Comma-separated platforms the file runs on: cpu, cuda, rocm, tpu (no accelerator needed to export)."""
    overwrite: bool = False
    """Replace an existing --out file and its sidecar."""


def export(args: ExportArgs) -> None:
    from jaxppo.export import export_policy, sidecar_path

    existing = [p for p in (args.out, sidecar_path(args.out)) if p.exists()]
    if existing and not args.overwrite:
        raise UsageError(f"--out {args.out}: {existing[0]} already exists; choose another --out or pass --overwrite")
    if not args.run.is_dir():
        raise UsageError(f"export: run folder {args.run} does not exist; pass a folder written by `jaxppo train --out "
                         "DIR`")
    try:
        policy = export_policy(args.run, args.out, seed_index=args.seed_index, stochastic=args.stochastic,
                               batch=args.batch, platforms=args.platforms)
    except ValueError as error:
        raise flag_error(error, ExportArgs, "export") from None
    meta = policy.meta
    inputs = ", ".join(entry["name"] for entry in meta["inputs"])
    print(f"{meta['env']}: {'stochastic' if meta['stochastic'] else 'greedy'} policy({inputs}), batch "
          f"{meta['batch'] or 'dynamic'}, platforms {','.join(meta['platforms'])}", flush=True)
    print(f"done: {policy.path} ({policy.path.stat().st_size:,} bytes) and {sidecar_path(policy.path)}", flush=True)


def run(argv: list[str]) -> int:
    export(parse(ExportArgs, argv, "jaxppo export"))
    return 0
