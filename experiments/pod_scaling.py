"""Scaling over processes x devices with real local processes, and checkpoint save/restore time vs state size.

1. Processes x devices: `jaxppo train` runs of one config, launched as P processes (JAX's distributed runtime over
   127.0.0.1, gloo collectives on CPU) with D fake CPU devices each; steps/s is the run's own summary.json
   (training only, compile excluded). Strong scaling keeps the global batch (--strong-envs environments) fixed;
   weak scaling gives every device --weak-envs-per-device environments. Counts are global, so a strong-scaling
   row learns exactly what the 1 x 1 row learns. On one CPU host every process and device shares the same cores:
   this shows the mechanism and its overhead, not a speed-up.
2. Checkpoints: CheckpointStore save and restore (with checksums) of a full TrainState of Breakout-MinAtar (400
   observation values per environment) for growing num_envs; the state size is what is written.

    .venv/bin/python experiments/pod_scaling.py                        # CPU host (minutes)
    .venv/bin/python experiments/pod_scaling.py --layouts 1x1 2x1 1x2 2x2 --updates 20

On a real pod the same measurement is one command per host (the SLURM script in the README, with `srun`):

    srun jaxppo train --env CartPole-v1 --num-envs 65536 --num-steps 32 --total-timesteps 2000000000 \\
        --num-devices all --quiet --out /shared/runs/scaling-$SLURM_NNODES

and steps/s is in each run's summary.json. Writes pod_scaling.csv, checkpoint_times.csv and pod_scaling.md to
--out-dir.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_layout(processes: int, devices: int, num_envs: int, updates: int, timeout: float) -> dict:
    """One `jaxppo train` run on processes x devices; its summary's numbers."""
    out = Path(tempfile.mkdtemp()) / "run"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "jaxppo.cli", "train", "--env", "CartPole-v1", "--num-envs", str(num_envs),
               "--num-steps", "32", "--num-minibatches", "4", "--total-timesteps", str(num_envs * 32 * updates),
               "--num-devices", str(devices), "--quiet", "--out", str(out)]
    port = free_port()
    launched = [command + (["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                            "--process-id", str(i), "--timeout", "120"] if processes > 1 else [])
                for i in range(processes)]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in launched]
    try:
        results = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{processes}x{devices}: {results[0][1][-500:]}")
    summary = json.loads((out / "summary.json").read_text())
    return dict(processes=processes, devices_per_process=devices, num_envs=num_envs, updates=updates,
                steps_per_second=summary["steps_per_second"], compile_seconds=summary["compile_seconds"],
                final_return=summary["final_return"])


def checkpoint_times(env_counts: list[int], repeats: int) -> list[dict]:
    """Save and restore seconds of a full Breakout-MinAtar TrainState for each num_envs."""
    import jax
    import numpy as np

    import jaxppo
    from jaxppo.checkpoint import CheckpointStore
    from jaxppo.runner import ChunkedRun

    rows = []
    for num_envs in env_counts:
        config = jaxppo.PPOConfig(env="Breakout-MinAtar", network="mlp", num_envs=num_envs, num_steps=8,
                                  num_minibatches=1, total_timesteps=num_envs * 8)
        state = ChunkedRun(config, 1, 1).init(jax.random.key(0)[None])
        size = sum(np.asarray(x).nbytes for x in jax.tree.leaves(jax.tree.map(
            lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, state)))
        store = CheckpointStore(Path(tempfile.mkdtemp()) / "checkpoints", config, max_to_keep=repeats + 1)
        saves, restores = [], []
        for step in range(1, repeats + 1):
            start = time.perf_counter()
            store.save(step, state, {})
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            jax.block_until_ready(store.restore(step, state)[0])
            restores.append(time.perf_counter() - start)
        store.close()
        rows.append(dict(num_envs=num_envs, state_mb=size / 2**20, save_seconds=min(saves),
                         restore_seconds=min(restores)))
        print(f"checkpoint of {num_envs} envs ({size / 2**20:.1f} MB): save {min(saves):.2f}s, restore "
              f"{min(restores):.2f}s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=["1x1", "1x2", "2x1", "2x2"],
                        help="PROCESSESxDEVICES per process")
    parser.add_argument("--strong-envs", type=int, default=256)
    parser.add_argument("--weak-envs-per-device", type=int, default=64)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--checkpoint-envs", type=int, nargs="+", default=[256, 4096, 65536])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)
    layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts]
    rows = []
    for scaling in ("strong", "weak"):
        for processes, devices in layouts:
            num_envs = args.strong_envs if scaling == "strong" else args.weak_envs_per_device * processes * devices
            row = {"scaling": scaling, **run_layout(processes, devices, num_envs, args.updates, args.timeout)}
            rows.append(row)
            print(f"{scaling} {processes}x{devices}: {num_envs} envs, {row['steps_per_second']:,.0f} steps/s "
                  f"(compile {row['compile_seconds']:.1f}s)", flush=True)
    checkpoints = checkpoint_times(args.checkpoint_envs, args.repeats)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in (("pod_scaling.csv", rows), ("checkpoint_times.csv", checkpoints)):
        with open(args.out_dir / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    base = {r["scaling"]: r["steps_per_second"] for r in rows if r["processes"] == r["devices_per_process"] == 1}
    lines = ["| scaling | processes x devices | envs | steps/s | vs 1 x 1 | compile s |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['scaling']} | {r['processes']} x {r['devices_per_process']} | {r['num_envs']} | "
              f"{r['steps_per_second']:,.0f} | {r['steps_per_second'] / base[r['scaling']]:.2f} | "
              f"{r['compile_seconds']:.1f} |" for r in rows]
    lines += ["", "| num_envs | state MB | save s | restore s |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['num_envs']:,} | {r['state_mb']:.1f} | {r['save_seconds']:.2f} | {r['restore_seconds']:.2f} |"
              for r in checkpoints]
    (args.out_dir / "pod_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
