"""`make_train(config) -> train(key, hparams=None)`: a whole PPO run as one pure function.

    train = scan over updates of: rollout (scan over time) -> GAE (reverse scan) -> epochs of minibatch steps

The per-device pieces (`init_state`, `update_step`) take an optional `axis_name`; `make_train` runs them on one
device, and `jaxppo.distributed` maps the very same functions over devices.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from jaxppo.agent import Agent, make_agent, policy_input
from jaxppo.advantages import gae
from jaxppo.collectives import device_index, pmean, replicas_in_sync
from jaxppo.config import HParams, PPOConfig
from jaxppo.envs import RunningMoments, close_tally, init_episode_stats, init_moments, reset_envs, update_moments
from jaxppo.losses import LossInputs
from jaxppo.networks import init_params
from jaxppo.rollout import EnvCarry, per_env_keys, rollout
from jaxppo.update import annealed_lr, init_optimizer_state, run_epochs


@struct.dataclass
class TrainState:
    """Everything a run carries from one update to the next; arrays only. Env fields are per device."""

    params: Any  # network parameters: what make_policy / make_value_fn take
    opt_state: Any  # optax state (clip -> Adam -> lr)
    env: EnvCarry  # env states, last observations, episode statistics of the local environments
    obs_moments: RunningMoments  # observation normaliser (unused unless normalize_observations)
    reward_moments: RunningMoments  # discounted-return moments for reward scaling (unused unless normalize_rewards)
    key: jax.Array  # PRNG key for the next update (replicated)
    update_step: jax.Array  # int32 []: updates done


@struct.dataclass
class Metrics:
    """One update's metrics (scalars); stacked by train into arrays with a leading [num_updates] axis."""

    episode_return: jax.Array  # mean raw return of episodes completed in this update (previous value if none)
    episode_length: jax.Array  # their mean length (previous value if none)
    episodes_completed: jax.Array  # how many completed (0: the two fields above repeat the previous update)
    env_steps: jax.Array  # int32, cumulative env steps over all devices and processes
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    total_loss: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array
    explained_variance: jax.Array  # 1 - Var(returns - values) / Var(returns), over the rollout batch
    grad_norm: jax.Array  # global norm of the averaged gradient before clipping, mean over minibatch steps
    learning_rate: jax.Array
    replicas_in_sync: jax.Array  # bool: parameters identical on every device after the update (True on one device)


def local_env_ids(config: PPOConfig, axis_name: str | None) -> jax.Array:
    """int32 [B_local]: global indices of the environments this device steps."""
    return device_index(axis_name) * config.envs_per_device + jnp.arange(config.envs_per_device, dtype=jnp.int32)


def init_state(agent: Agent, key: jax.Array, axis_name: str | None = None) -> TrainState:
    """Initial state from the run key: identical parameters everywhere, local envs reset by global index."""
    config = agent.config
    params_key, reset_key, loop_key = jax.random.split(key, 3)
    params = init_params(agent.network, agent.spec, params_key)
    obs, env_state = reset_envs(agent.env, agent.env_params, per_env_keys(reset_key, local_env_ids(config, axis_name)))
    carry = EnvCarry(
        env_state=env_state, obs=obs, episodes=init_episode_stats(config.envs_per_device),
        discounted_return=jnp.zeros((config.envs_per_device,), jnp.float32),
    )
    return TrainState(
        params=params, opt_state=init_optimizer_state(config, params), env=carry,
        obs_moments=init_moments(agent.spec.obs_shape), reward_moments=init_moments(()),
        key=loop_key, update_step=jnp.zeros((), jnp.int32),
    )


def explained_variance(values: jax.Array, returns: jax.Array, axis_name: str | None = None) -> jax.Array:
    """1 - Var(returns - values) / Var(returns) over the global batch; 0 when Var(returns) is 0."""
    def variance(x):
        mean = pmean(jnp.mean(x), axis_name)
        return pmean(jnp.mean(jnp.square(x - mean)), axis_name)

    var_returns = variance(returns)
    return jnp.where(var_returns > 0, 1.0 - variance(returns - values) / jnp.where(var_returns > 0, var_returns, 1.0),
                     0.0)


def update_step(agent: Agent, state: TrainState, hp: HParams,
                axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One PPO update on this device's environments: rollout -> GAE -> epochs -> normaliser statistics."""
    config = agent.config
    lr = annealed_lr(config, hp.lr, state.update_step)
    key, rollout_key, epoch_key = jax.random.split(state.key, 3)
    env_ids = local_env_ids(config, axis_name)
    carry, traj, tally = rollout(agent, state.params, state.env, rollout_key, env_ids, state.obs_moments,
                                 state.reward_moments, hp.gamma)
    episodes, mean_return, mean_length, completed = close_tally(carry.episodes, tally, axis_name)

    # The update sees observations exactly as the policy saw them: normalised with the pre-update statistics.
    obs = policy_input(config, traj.obs, state.obs_moments)
    next_values = agent.network.apply(state.params, policy_input(config, traj.final_obs, state.obs_moments),
                                      method=agent.network.value)
    advantages, returns = gae(traj.reward, traj.value, next_values, traj.terminated,
                              traj.terminated | traj.truncated, hp.gamma, hp.gae_lambda)
    batch = LossInputs(obs=obs, actions=traj.action, old_log_probs=traj.log_prob, old_values=traj.value,
                       advantages=advantages, returns=returns)
    params, opt_state, step_metrics = run_epochs(agent, state.params, state.opt_state, batch, hp, lr, epoch_key,
                                                 env_ids[0], axis_name)

    obs_moments, reward_moments = state.obs_moments, state.reward_moments
    if config.normalize_observations:
        obs_moments = update_moments(obs_moments, traj.obs.reshape((-1,) + agent.spec.obs_shape), axis_name)
    if config.normalize_rewards:
        reward_moments = update_moments(reward_moments, traj.discounted_return.reshape(-1), axis_name)

    update_count = state.update_step + 1
    loss = step_metrics.loss
    metrics = Metrics(
        episode_return=mean_return, episode_length=mean_length, episodes_completed=completed,
        env_steps=update_count * (config.batch_size * jax.process_count()),
        policy_loss=loss.policy_loss, value_loss=loss.value_loss, entropy=loss.entropy, total_loss=loss.total_loss,
        approx_kl=loss.approx_kl, clip_fraction=loss.clip_fraction,
        explained_variance=explained_variance(traj.value, returns, axis_name),
        grad_norm=step_metrics.grad_norm, learning_rate=lr,
        replicas_in_sync=replicas_in_sync(params, axis_name),
    )
    state = TrainState(params=params, opt_state=opt_state, env=carry.replace(episodes=episodes),
                       obs_moments=obs_moments, reward_moments=reward_moments, key=key, update_step=update_count)
    return state, metrics


ProgressFn = Callable[[dict[str, np.ndarray]], None]


def progress_interval(config: PPOConfig) -> int:
    """Updates between progress callbacks: about 100 per run (the host throttles printing further)."""
    return max(1, config.num_updates // 100)


def emit_progress(config: PPOConfig, progress_fn: ProgressFn | None, metrics: Metrics) -> None:
    """Call progress_fn on the host every progress_interval updates and at the last one (never per env step)."""
    if progress_fn is None:
        return
    update = metrics.env_steps // (config.batch_size * jax.process_count())
    due = (update % progress_interval(config) == 0) | (update == config.num_updates)
    payload = {"update": update, "env_steps": metrics.env_steps, "episode_return": metrics.episode_return,
               "episode_length": metrics.episode_length}

    def send(payload):
        jax.debug.callback(lambda p: progress_fn({k: np.asarray(v) for k, v in p.items()}), payload)

    lax.cond(due, send, lambda _: None, payload)


def run_updates(agent: Agent, state: TrainState, hp: HParams, num_updates: int, axis_name: str | None = None,
                progress_fn: ProgressFn | None = None) -> tuple[TrainState, Metrics]:
    """num_updates updates as one lax.scan; metrics stacked along a leading [num_updates] axis."""

    def body(state, _):
        state, metrics = update_step(agent, state, hp, axis_name)
        emit_progress(agent.config, progress_fn, metrics)
        return state, metrics

    return lax.scan(body, state, None, length=num_updates)


class TrainParts(NamedTuple):
    """A run split in two pure functions, so long runs can be cut into compiled chunks.

    init(key) -> TrainState; run(state, hparams, num_updates) -> (TrainState, Metrics [num_updates]).
    `run` continues exactly where `state` stands (update counter, keys, learning-rate schedule), so any split of
    config.num_updates into chunks gives the result of one uninterrupted `train(key)`. num_updates is static.
    """

    init: Callable[[jax.Array], TrainState]
    run: Callable[[TrainState, HParams, int], tuple[TrainState, Metrics]]


def make_train_parts(config: PPOConfig, env: Any = None, env_params: Any = None,
                     progress_fn: ProgressFn | None = None) -> TrainParts:
    """init/run for this config: on one device here, over config.num_devices via jaxppo.distributed."""
    if config.num_devices > 1:
        from jaxppo.distributed import make_distributed_parts

        return make_distributed_parts(config, env, env_params, progress_fn)
    agent = make_agent(config, env, env_params)
    return TrainParts(
        init=lambda key: init_state(agent, key),
        run=lambda state, hp, num_updates: run_updates(agent, state, hp, num_updates, progress_fn=progress_fn),
    )


def make_train(config: PPOConfig, env: Any = None, env_params: Any = None,
               progress_fn: ProgressFn | None = None) -> Callable[..., tuple[TrainState, Metrics]]:
    """Build train(key, hparams=None) -> (TrainState, Metrics): the whole run as one pure function.

    `train` is pure: jit it, vmap it over keys (seeds) and/or over a batch of HParams. Metrics have a leading axis
    of config.num_updates updates. With config.num_devices > 1 the same per-device program runs on several devices
    (jaxppo.distributed). progress_fn, if given, receives {update, env_steps, episode_return, episode_length} from
    inside the compiled run (under vmap: once per seed; on several devices: once per device).
    """
    return train_from_parts(config, make_train_parts(config, env, env_params, progress_fn))


def train_from_parts(config: PPOConfig, parts: TrainParts) -> Callable[..., tuple[TrainState, Metrics]]:
    """train(key, hparams=None): init, then all config.num_updates updates in one call of parts.run."""

    def train(key: jax.Array, hparams: HParams | None = None) -> tuple[TrainState, Metrics]:
        hp = HParams.from_config(config) if hparams is None else hparams
        return parts.run(parts.init(key), hp, config.num_updates)

    return train
