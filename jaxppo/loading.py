"""A finished run folder as policies: its final parameters read (checksum first, parse second) into the structure
its config describes, and `load_run`, one seed's policy ready to act (`jaxppo.load`).

    run = jaxppo.load("runs/cartpole")            # the first seed (index 0) of the run
    run = jaxppo.load("runs/cartpole", seed=2)    # the third seed of a --num-seeds run
    action = run.act(obs)                         # greedy; run.act(obs, key) samples
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxppo import outputs
from jaxppo.agent import Agent, make_agent
from jaxppo.config import CUSTOM_ENV, PPOConfig
from jaxppo.outputs import OutputError


class LoadedRun(NamedTuple):
    """A finished run, ready to act (see load_run)."""

    config: PPOConfig
    params: Any  # one seed's parameters
    normalizers: Any  # that seed's normaliser statistics
    act: Any  # act(obs, key=None, **kwargs) -> env actions (see make_policy; carry/first with memory)
    num_seeds: int
    seed: int = 0  # the seed index these parameters belong to (0 .. num_seeds - 1)


def run_agent(run_dir: Path, env: Any = None, env_params: Any = None) -> tuple[PPOConfig, PPOConfig, Agent]:
    """(config as trained, config with num_devices=1, the agent it describes) of a run folder; a run trained on an
    environment instance (env='custom') needs that instance again."""
    run_dir = Path(run_dir)
    trained = outputs.read_config(run_dir)
    config = dataclasses.replace(trained, num_devices=1)
    if config.env == CUSTOM_ENV and env is None:
        raise OutputError(f"{run_dir} was trained on an environment instance (env='custom'): pass the same instance "
                          "as env=... (and env_params=...)")
    try:
        return trained, config, make_agent(config, env, env_params)
    except ValueError as error:
        raise OutputError(f"{run_dir / outputs.CONFIG}: {error}") from None


def read_final_params(run_dir: Path, env: Any = None, env_params: Any = None,
                      agent: Agent | None = None) -> tuple[PPOConfig, dict[str, Any], int]:
    """(config with num_devices=1, {'params', 'normalizers'} with leaves [S, ...], S) of a finished run folder.

    The file's checksum and the config it was trained with are verified before a byte of it is parsed; then its
    structure must be that of the config's network, per seed. OutputError naming the file otherwise.
    """
    from flax import serialization

    from jaxppo.networks import init_params
    from jaxppo.normalizers import init_normalizers

    run_dir = Path(run_dir)
    if agent is None:
        trained, config, agent = run_agent(run_dir, env, env_params)
    else:
        trained = outputs.read_config(run_dir)
        config = agent.config
    path = run_dir / outputs.PARAMS
    if not path.exists():
        raise OutputError(f"{path} is missing; the run has not finished (jaxppo train --resume {run_dir})")
    data = outputs.verified_params_bytes(path, trained)
    single = {"params": jax.eval_shape(lambda k: init_params(agent.network, agent.spec, k), jax.random.key(0)),
              "normalizers": jax.eval_shape(lambda: init_normalizers(agent.spec.obs_shape))}
    try:
        raw = serialization.msgpack_restore(data)
    except Exception as error:  # noqa: BLE001 - msgpack raises many types for bytes it cannot parse
        raise OutputError(f"{path} is unreadable ({type(error).__name__})") from None
    first = jax.tree.leaves(raw.get("params", {})) if isinstance(raw, dict) else []
    reference = jax.tree.leaves(single["params"])
    if not first or np.ndim(first[0]) != len(reference[0].shape) + 1:
        raise OutputError(f"{path} does not hold per-seed parameters of the config in {run_dir / outputs.CONFIG}")
    num_seeds = int(np.shape(first[0])[0])
    template = jax.tree.map(lambda x: np.zeros((num_seeds,) + tuple(x.shape), x.dtype), single)
    try:
        return config, serialization.from_state_dict(template, raw), num_seeds
    except Exception as error:  # noqa: BLE001 - a structure that is not the config's network
        raise OutputError(f"{path} does not match the run's config ({str(error)[:200]})") from None


def load_run(run_dir: str | Path, seed: int | None = None, env: Any = None, env_params: Any = None,
             member: int | None = None) -> LoadedRun:
    """A trained run folder in one line: config, one seed's parameters and normaliser statistics, and act().

        run = jaxppo.load("runs/cartpole")           # seed index 0
        action = run.act(obs)                        # greedy; run.act(obs, key) samples

    Args:
      run_dir: a folder written by `jaxppo train` (or train_run) that has finished.
      seed: which seed of a multi-seed run, as an index 0 .. num_seeds - 1 (the order of summary.json's `seeds`);
        default 0, the first seed — except in a population-based training run, where the default is the best
        member (summary.json's `best_member`, by final training return). A one-seed run has only index 0.
      member: the same index under the name population runs use (sweeps: member m is setting m // seeds; PBT:
        member m started from seed + m); give seed or member, not both.
      env, env_params: the environment instance a run with env='custom' was trained on.

    act(obs, key=None, action_mask=None, carry=None, first=None) applies the saved observation statistics; with
    memory it returns (actions, carry) like make_policy's act.
    """
    from jaxppo.agent import make_policy

    run_dir = Path(run_dir)
    if seed is not None and member is not None:
        raise ValueError(f"seed={seed!r}, member={member!r}: give one index (they name the same thing)")
    seed = member if seed is None else seed
    if seed is None:
        seed = _default_member(run_dir)
    _, config, agent = run_agent(run_dir, env, env_params)
    config, saved, num_seeds = read_final_params(run_dir, agent=agent)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < num_seeds:
        raise ValueError(f"seed={seed!r}: the run has {num_seeds} seed(s); give an index in 0..{num_seeds - 1}")
    seed = int(seed)
    params = jax.tree.map(lambda x: x[seed], saved["params"])
    normalizers = jax.tree.map(lambda x: x[seed], saved["normalizers"])
    policy = make_policy(config, env, env_params)

    def act(obs, key=None, **kwargs):
        return policy(params, obs, key, normalizers=normalizers, **kwargs)

    return LoadedRun(config, params, normalizers, act, num_seeds, seed)


def _default_member(run_dir: Path) -> int:
    """0, or the best member of a PBT run (its run.json has a population with pbt, its summary a best_member)."""
    try:
        population = (outputs.read_json(run_dir / outputs.RUN, "run settings").get("population") or {})
        if population.get("pbt"):
            best = outputs.read_json(run_dir / outputs.SUMMARY, "summary").get("best_member")
            return int(best) if best is not None else 0
    except (ValueError, OSError, AttributeError, TypeError):
        pass
    return 0
