"""Hang stress test: the known hang repros and random short training configurations, each in a fresh process with
a timeout, with XLA's default flags (jaxppo sets none). Not part of CI (minutes of CPU); reports hangs, failures
and successes.

The hang it guards against: jaxlib 0.10's batched LAPACK kernels (the QR of the orthogonal initialiser under
`jax.vmap`) block XLA:CPU worker threads on work queued to the same pool (docs/cpu-lapack-hang.md). jaxppo now
initialises vmapped seeds one after another; this script checks that no training program hangs, in the shapes
users run: seeds x hyperparameters vmapped, one or two devices, chunked and resumed runs, gymnax imported first.

Run from the repository root:

    .venv/bin/python experiments/stress.py                      # the repros + 50 random configurations
    .venv/bin/python experiments/stress.py --random 100 --timeout 180 --out experiments/results/stress

Writes stress.csv (one row per case) and stress.md to --out; exit code 1 if any case hung or failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys, tempfile
spec = json.loads(sys.argv[1])
import gymnax  # imported before jaxppo on purpose: the order that defeated the old process-wide flag
import jax, jax.numpy as jnp, numpy as np
import jaxppo
from jaxppo.config import HParams, stack_hparams

config = jaxppo.PPOConfig(**spec["config"])
kind = spec["kind"]
if kind == "vmap":
    train = jaxppo.make_train(config)
    keys = jax.random.split(jax.random.key(spec["seed"]), spec["seeds"])
    hp = HParams.from_config(config)
    if spec["hparams"] > 1:
        hps = stack_hparams([hp.replace(lr=config.lr * (1 + i)) for i in range(spec["hparams"])])
        fn = jax.jit(jax.vmap(jax.vmap(train, in_axes=(0, None)), in_axes=(None, 0)))
        _, metrics = fn(keys, hps)
    else:
        _, metrics = jax.jit(jax.vmap(train))(keys)
    jax.block_until_ready(metrics)
elif kind in ("chunked", "resumed"):
    from jaxppo import runner
    out = tempfile.mkdtemp() + "/run"
    options = runner.RunOptions(seed=spec["seed"], num_seeds=spec["seeds"], chunk_updates=spec["chunk"],
                                checkpoint_every=spec["chunk"] if kind == "resumed" else 0)
    stop = max(1, config.num_updates // 2) if kind == "resumed" else None
    runner.train_run(config, out, options, quiet=True, stop_after_updates=stop)
    if kind == "resumed":
        runner.resume_run(out, quiet=True)
print("finished", flush=True)
'''


class Case(NamedTuple):
    name: str
    spec: dict
    devices: int  # fake CPU devices the process gets


def repros() -> list[Case]:
    """The hangs seen before the fix, as jaxppo programs."""
    base = dict(env="CartPole-v1", total_timesteps=2048)
    return [
        Case("repro: 2 seeds x 2048 steps vmapped (the original hang)",
             dict(kind="vmap", config=base, seeds=2, hparams=1, seed=0), 1),
        Case("repro: 4 seeds of the Catch preset vmapped",
             dict(kind="vmap", config=dict(env="Catch-bsuite", num_envs=16, num_steps=64, total_timesteps=16 * 64 * 4,
                                           lr=1e-3, ent_coef=0.0), seeds=4, hparams=1, seed=0), 1),
        Case("repro: a sweep, 3 settings x 2 seeds",
             dict(kind="vmap", config=base, seeds=2, hparams=3, seed=0), 1),
        Case("repro: 16 seeds vmapped",
             dict(kind="vmap", config=dict(base, total_timesteps=4096), seeds=16, hparams=1, seed=0), 1),
    ]


def random_case(rng: random.Random, index: int) -> Case:
    env, obs_rank = rng.choice([("CartPole-v1", 1), ("Acrobot-v1", 1), ("Pendulum-v1", 1), ("Catch-bsuite", 2),
                                ("Breakout-MinAtar", 3)])
    devices = rng.choice([1, 1, 2])
    num_envs = devices * rng.choice([2, 4, 8])
    num_steps = rng.choice([8, 16, 32])
    memory = rng.choice(["none", "none", "none", "gru"]) if obs_rank == 1 else "none"
    per_device = num_envs // devices
    choices = [m for m in (1, 2, 4) if (per_device % m == 0 if memory == "gru" else (per_device * num_steps) % m == 0)]
    config = dict(env=env, num_envs=num_envs, num_steps=num_steps, num_minibatches=rng.choice(choices),
                  num_epochs=rng.choice([1, 2, 4]), total_timesteps=num_envs * num_steps * rng.choice([2, 4, 6]),
                  num_devices=devices, memory=memory, memory_size=16, network="mlp",
                  hidden_sizes=rng.choice([(16,), (32, 32), (64, 64)]),
                  normalize_observations=rng.random() < 0.3, normalize_rewards=rng.random() < 0.3)
    kind = rng.choice(["vmap", "vmap", "chunked", "resumed"])
    spec = dict(kind=kind, config=config, seeds=rng.choice([1, 2, 3, 4]), hparams=rng.choice([1, 1, 2, 3]),
                seed=rng.randrange(1000), chunk=rng.choice([1, 2, 3]))
    if kind != "vmap":
        spec["hparams"] = 1
    return Case(f"random {index}: {kind} {env} {num_envs}x{num_steps} on {devices} device(s), memory={memory}",
                spec, devices)


def run_case(case: Case, timeout: float) -> tuple[str, float, str]:
    """(outcome 'ok' | 'hang' | 'fail', seconds, last lines of output) of one case in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    if case.devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={case.devices}"
    start = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-c", WORKER, json.dumps(case.spec)], env=env, capture_output=True,
                                text=True, timeout=timeout, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return "hang", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    if result.returncode == 0 and "finished" in result.stdout:
        return "ok", seconds, ""
    return "fail", seconds, (result.stderr or result.stdout).strip().splitlines()[-1:][0] if (result.stderr or
                                                                                            result.stdout) else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=50, help="random configurations after the repros")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds before a case counts as hung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "stress")
    args = parser.parse_args(argv)
    if args.random < 0 or args.timeout <= 0:
        parser.error("--random must be >= 0 and --timeout > 0")
    rng = random.Random(args.seed)
    cases = repros() + [random_case(rng, i) for i in range(args.random)]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, case in enumerate(cases, start=1):
        outcome, seconds, detail = run_case(case, args.timeout)
        rows.append(dict(case=case.name, outcome=outcome, seconds=round(seconds, 1), detail=detail,
                         spec=json.dumps(case.spec, sort_keys=True)))
        print(f"[{number}/{len(cases)}] {outcome:4s} {seconds:6.1f}s  {case.name}" + (f"  ({detail})" if detail
                                                                                        else ""), flush=True)
    with open(args.out / "stress.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("ok", "hang", "fail")}
    lines = [f"# Hang stress test: {len(rows)} cases, {counts['ok']} finished, {counts['hang']} hung, "
             f"{counts['fail']} failed", "", f"timeout {args.timeout:.0f} s per case, fresh process each, XLA's "
             "default flags, gymnax imported before jaxppo", "", "| case | outcome | seconds |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['outcome']} | {r['seconds']} |" for r in rows]
    (args.out / "stress.md").write_text("\n".join(lines) + "\n")
    print(lines[0])
    return 0 if counts["hang"] == counts["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
