"""Shared settings and helpers of the test suite: tiny runs, the CLI in-process, one-line error checks.

Imported by tests as `from tests import helpers` (the repository root is on sys.path when pytest runs from it).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxppo
from jaxppo import cli
from jaxppo.agent import make_agent
from jaxppo.losses import LossInputs, ppo_loss

ROOT = Path(__file__).resolve().parents[1]

TINY_FLAGS = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--quiet"]
"""CLI flags of a tiny CartPole run (add --total-timesteps)."""

TINY = dict(num_envs=4, num_steps=16, num_minibatches=2)
"""PPOConfig fields of a tiny CartPole run (add total_timesteps)."""

SHORT_RUN = dict(env="CartPole-v1", num_envs=16, num_steps=16, total_timesteps=16 * 16 * 4, num_minibatches=4,
                 num_epochs=2)
"""A global batch of 16 envs x 16 steps, 4 updates, 4 minibatches: small, but every collective is exercised."""

PROBE = dict(env="custom", num_envs=8, num_steps=16, num_minibatches=2, num_epochs=4, lr=3e-3, anneal_lr=False,
             hidden_sizes=(32, 32))
"""PPOConfig fields for the probe environments (tests/probe_envs.py)."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_config(updates: int = 6, **overrides) -> jaxppo.PPOConfig:
    """A tiny CartPole config of `updates` updates."""
    fields = {**TINY, "total_timesteps": TINY["num_envs"] * TINY["num_steps"] * updates, **overrides}
    return jaxppo.PPOConfig(**fields)


def train_cli(*args: str) -> int:
    """`jaxppo train ARGS` in-process; returns the exit code."""
    return cli.main(["train", *args])


def usage_error(argv: list[str], capsys, code: int = 2) -> str:
    """Run the command line; assert the exit code and ONE `jaxppo: error:` line on stderr; return that line."""
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxppo: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def random_minibatch(key: jax.Array, n: int = 64, obs_dim: int = 4) -> LossInputs:
    """A random feed-forward minibatch of n CartPole-like samples (advantages already normalised or not)."""
    k = jax.random.split(key, 5)
    return LossInputs(
        obs=jax.random.normal(k[0], (n, obs_dim)), first=jnp.zeros((n,), bool), action_mask=None,
        actions=jax.random.randint(k[1], (n,), 0, 2),
        old_log_probs=jnp.log(jnp.full((n,), 0.5)) + 0.3 * jax.random.normal(k[2], (n,)),
        old_values=jax.random.normal(k[3], (n,)), advantages=jax.random.normal(k[4], (n,)) + 0.5,
        returns=jax.random.normal(k[0], (n,)), memory=(),
    )


def cartpole_agent(**overrides):
    return make_agent(jaxppo.PPOConfig(**overrides))


def leaves_close(a, b, rtol=1e-5, atol=1e-7) -> float:
    """Max absolute difference of two pytrees' leaves (asserting equal structure)."""
    diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return max(diffs)


def read_tensorboard(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the scalar events under log_dir (tensorboard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def fold_obs_normalisation(params, moments):
    """Params of a network that sees raw obs but computes what `params` computes on normalised obs.

    Normalisation (x - m) / s with s = sqrt(var + 1e-8) is affine, so the first dense layer of each torso absorbs
    it: ((x - m) / s) @ K + b = x @ (K / s[:, None]) + (b - (m / s) @ K). Exact while no observation is clipped.
    """
    mean, scale = np.asarray(moments.mean, np.float64), np.sqrt(np.asarray(moments.var, np.float64) + 1e-8)
    folded = jax.tree.map(np.asarray, params)
    for torso in ("actor_torso", "critic_torso"):
        layer = folded["params"][torso]["Dense_0"]
        kernel = np.asarray(layer["kernel"], np.float64)
        layer["bias"] = (layer["bias"] - (mean / scale) @ kernel).astype(np.float32)
        layer["kernel"] = (kernel / scale[:, None]).astype(np.float32)
    return folded


def wait_for(path, timeout: float = 120.0, interval: float = 0.1) -> bool:
    """Poll until path exists (a subprocess got that far); True if it does within timeout seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(interval)
    return path.exists()


def weight_l2(params) -> jax.Array:
    """Sum of squares of every parameter."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params))


def ppo_loss_with_weight_decay(params, batch, hp, config, evaluate):
    """A custom loss for the loss seam: ppo_loss + 0.01 * ||params||^2, reporting the penalty as its own metric."""
    loss, metrics = ppo_loss(params, batch, hp, config, evaluate)
    l2 = weight_l2(params)
    fields = {field.name: getattr(metrics, field.name) for field in dataclasses.fields(metrics)}
    return loss + 0.01 * l2, {**fields, "weight_l2": l2}


def subprocess_env(devices: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for a child Python process: this repository importable, CPU backend, and XLA's default flags
    (the suite's fake-device flag dropped) or `devices` fake CPU devices; extra variables on top."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu", **extra)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -c code` in a fresh process with subprocess_env(); its output captured as text."""
    return subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def signal_once_running(procs: list[subprocess.Popen], started: Path, signum: int,
                        timeout: float = 120) -> list[tuple[str, str]]:
    """Once `started` exists (a run has written its first chunk), send signum to every process and wait for them;
    [(stdout, stderr)] per process. Processes still alive afterwards (or on failure) are killed."""
    try:
        assert wait_for(started), f"{started} never appeared"
        for proc in procs:
            proc.send_signal(signum)
        return [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
