"""`make_train(config) -> train(key, hparams=None)`: a whole PPO run as one pure function.

    train = scan over updates of: rollout (scan over time) -> GAE (reverse scan) -> epochs of minibatch steps

The per-device pieces (`init_state`, `update_step`) take an optional `axis_name`; on several devices (and
processes) `make_train_parts` maps the very same functions with `jaxppo.distributed.map_over_devices`, splitting
the fields of the state that are per environment (`TrainState.env`) and replicating the rest.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxppo import distributed
from jaxppo.advantages import gae
from jaxppo.agent import Agent, make_agent, policy_input
from jaxppo.collectives import (DEVICE_AXIS, Moments, combine_moments, device_index, gather, local_moments,
                                replicas_in_sync)
from jaxppo.config import HParams, PPOConfig
from jaxppo.episodes import EpisodeTally, close_tally
from jaxppo.losses import LossFn, LossInputs, loss_hyperparameters, ppo_loss
from jaxppo.networks import init_params
from jaxppo.normalizers import Normalizers, init_normalizers, merge_moments
from jaxppo.rollout import EnvCarry, Transition, next_values, reset_envs, rollout, rollout_sequences
from jaxppo.schedules import effective_hparams
from jaxppo.update import TargetInputs, init_optimizer_state, learn, make_layout, prepare


@struct.dataclass
class TrainState:
    """Everything a run carries from one update to the next; arrays only. `env` fields are per environment."""

    params: Any  # network parameters: what make_policy / make_value_fn take
    opt_state: Any  # Adam state of the flat parameter vector
    env: EnvCarry  # env states, last observations, carries and episode statistics of the local environments
    normalizers: Normalizers  # observation / return statistics (unused unless normalize_observations / _rewards)
    key: jax.Array  # PRNG key for the next update (replicated)
    update_step: jax.Array  # int32 []: updates done
    hparams: HParams  # the run's hyperparameters (schedules unapplied); per member when vmapped; checkpointed


@struct.dataclass
class Metrics:
    """One update's metrics (scalars); stacked into arrays with a leading [num_updates] axis by `train`.

    `env_steps` (a property: update * steps_per_update, exact as int64 on the host) counts env steps over all
    devices and processes after the update.
    """

    update: jax.Array  # int32: updates done after this one (1-based index of the update)
    episode_return: jax.Array  # mean raw return of episodes that ended in this update; previous value if none;
    episode_length: jax.Array  # their mean length                                       NaN before the first
    episodes_completed: jax.Array  # how many ended (0: the two fields above repeat the previous update)
    loss: Any  # the loss function's metrics (ppo_loss: LossMetrics), means over the update's minibatch steps
    grad_norm: jax.Array  # global norm of the averaged gradient before clipping, mean over minibatch steps
    explained_variance: jax.Array  # 1 - Var(returns - values) / Var(returns), over the rollout batch
    learning_rate: jax.Array  # the update's effective (scheduled) values of lr, ent_coef and clip_eps
    ent_coef: jax.Array
    clip_eps: jax.Array
    invalid_action_masks: jax.Array | None  # observations whose mask allowed no action (None without masks)
    replicas_in_sync: jax.Array | None  # parameters identical on every device (None unless check_replicas)
    steps_per_update: int = struct.field(pytree_node=False, default=0)

    @property
    def env_steps(self) -> np.ndarray:
        """int64 [...]: cumulative env steps after each update (computed on the host: exact beyond 2^31)."""
        return np.asarray(self.update, np.int64) * self.steps_per_update


ProgressFn = Callable[[dict[str, np.ndarray]], None]


def local_env_ids(agent: Agent, axis_name: str | None = None) -> jax.Array:
    """int32 [B_local]: global indices of the environments this device steps."""
    per_device = agent.config.envs_per_device(jax.process_count())
    return device_index(axis_name) * per_device + jnp.arange(per_device, dtype=jnp.int32)


def init_state(agent: Agent, key: jax.Array, hp: HParams, axis_name: str | None = None) -> TrainState:
    """Initial state from the run key and hyperparameters: identical parameters everywhere, local envs reset by
    global index."""
    config = agent.config
    params_key, reset_key, loop_key, warmup_key = jax.random.split(key, 4)
    params = init_params(agent.network, agent.spec, params_key)
    env_ids = local_env_ids(agent, axis_name)
    normalizers = init_normalizers(agent.spec.obs_shape)
    if config.normalizer_warmup_steps:
        normalizers = warm_up_normalizers(agent, params, normalizers, warmup_key, env_ids, hp.gamma, axis_name)
    return TrainState(
        params=params, opt_state=init_optimizer_state(config, params), env=reset_envs(agent, reset_key, env_ids),
        normalizers=normalizers, key=loop_key, update_step=jnp.zeros((), jnp.int32), hparams=hp,
    )


def warm_up_normalizers(agent: Agent, params, normalizers: Normalizers, key: jax.Array, env_ids: jax.Array,
                        gamma: jax.Array, axis_name: str | None) -> Normalizers:
    """Statistics of config.normalizer_warmup_steps steps of the initial policy in separate, fresh environments.

    The trained environments are reset apart from these, and warm-up steps do not count as training steps.
    """
    config = agent.config
    reset_key, rollout_key = jax.random.split(key)
    carry = reset_envs(agent, reset_key, env_ids)
    # The initial policy acts on raw observations: its statistics are what is being measured.
    _, traj, _ = rollout(agent, params, carry, rollout_key, env_ids, normalizers, gamma,
                         num_steps=config.normalizer_warmup_steps)
    stats = rollout_statistics(agent, traj, EpisodeTally(*(jnp.zeros(()),) * 3), axis_name)
    return update_normalizers(agent, normalizers, stats, traj.obs.shape[0] * traj.obs.shape[1])


class RolloutStatistics(NamedTuple):
    """Per-device statistics of one rollout, gathered from every device in one collective ([D, ...] leaves)."""

    tally: Any  # float32 [D, 3]: episodes' return sum, length sum, count
    obs: Moments | None  # [D, *obs] (normalize_observations)
    returns: Moments | None  # [D] discounted raw returns (normalize_rewards)
    extra: Any  # what the caller added (explained variance and advantage moments in an update)


def rollout_statistics(agent: Agent, traj: Transition, tally: EpisodeTally, axis_name: str | None,
                       extra: Any = ()) -> RolloutStatistics:
    """Gather every statistic of a rollout that must be global, with one all-gather."""
    config = agent.config
    obs_axes = tuple(range(2))
    local = RolloutStatistics(
        tally=jnp.stack([tally.return_sum, tally.length_sum, tally.count]),
        obs=local_moments(traj.obs, obs_axes) if config.normalize_observations else None,
        returns=local_moments(traj.discounted_return, obs_axes) if config.normalize_rewards else None,
        extra=extra,
    )
    return gather(local, axis_name)


def update_normalizers(agent: Agent, normalizers: Normalizers, stats: RolloutStatistics,
                       count_per_device: int) -> Normalizers:
    """Merge the gathered rollout statistics into the normaliser statistics that are switched on."""
    config = agent.config
    obs_moments, reward_moments = normalizers.obs, normalizers.reward
    if config.normalize_observations:
        obs_moments = merge_moments(obs_moments, stats.obs, count_per_device)
    if config.normalize_rewards:
        reward_moments = merge_moments(reward_moments, stats.returns, count_per_device)
    return Normalizers(obs=obs_moments, reward=reward_moments)


def explained_variance_moments(values: jax.Array, returns: jax.Array) -> Moments:
    """Local Moments [2] of (returns, returns - values) over the rollout."""
    both = jnp.stack([returns, returns - values])
    return local_moments(both, (1, 2))


def explained_variance(gathered: Moments, count_per_device: int) -> jax.Array:
    """1 - Var(returns - values) / Var(returns) over the global batch; 0 when Var(returns) is 0."""
    _, var = combine_moments(gathered, count_per_device)
    var_returns, var_error = var[0], var[1]
    return jnp.where(var_returns > 0, 1.0 - var_error / jnp.where(var_returns > 0, var_returns, 1.0), 0.0)


def update_step(agent: Agent, loss_fn: LossFn, state: TrainState, axis_name: str | None = None,
                check_replicas: bool = False) -> tuple[TrainState, Metrics]:
    """One PPO update on this device's environments: rollout -> GAE -> prepare -> gather -> learn -> statistics.

    The update's hyperparameters are computed once, from state.hparams and the update counter (schedules), and
    read by every consumer: rollout (reward scaling), GAE, loss, optimizer.
    """
    config = agent.config
    layout = make_layout(config)
    hp = effective_hparams(state.hparams, state.update_step, config.num_updates)
    key, rollout_key, epoch_key = jax.random.split(state.key, 3)
    env_ids = local_env_ids(agent, axis_name)
    carry, traj, tally, starts = rollout_sequences(agent, state.params, state.env, rollout_key, env_ids,
                                                   state.normalizers, hp.gamma)

    values_next = next_values(agent, state.params, carry, traj, state.normalizers)
    advantages, returns = gae(traj.reward, traj.value, values_next, traj.terminated, traj.terminated | traj.truncated,
                              hp.gamma, hp.gae_lambda, config.gae_horizon, config.advantage_form)
    # The update sees observations exactly as the policy saw them: normalised with the pre-update statistics.
    obs = policy_input(config, traj.obs, state.normalizers)
    targets = None
    if config.recompute_advantages:
        last_obs = policy_input(config, carry.obs, state.normalizers)
        targets = TargetInputs(
            obs=jnp.concatenate([obs, last_obs[None]]), first=jnp.concatenate([traj.first, carry.first[None]]),
            memory=state.env.memory, reward=traj.reward, terminated=traj.terminated, truncated=traj.truncated,
            bootstrap_value=traj.bootstrap_value)
    plan = prepare(layout, LossInputs(
        obs=obs, first=traj.first, action_mask=traj.action_mask, actions=traj.action, old_log_probs=traj.log_prob,
        old_values=traj.value, advantages=advantages, returns=returns, memory=starts),
        epoch_key, env_ids.shape[0], env_ids[0], targets)

    # Every global statistic of this update in one all-gather.
    invalid = None if traj.invalid_masks is None else jnp.sum(traj.invalid_masks)
    extra = (explained_variance_moments(traj.value, returns), plan.advantage_moments, invalid)
    stats = rollout_statistics(agent, traj, tally, axis_name, extra)
    ev_moments, adv_moments, invalid = stats.extra

    params, opt_state, step_metrics = learn(agent, layout, loss_fn, state.params, state.opt_state, plan,
                                            adv_moments, hp, axis_name)
    batch_per_device = traj.reward.size
    episodes, summary = close_tally(carry.episodes, EpisodeTally(*jnp.sum(stats.tally, axis=0)))
    normalizers = update_normalizers(agent, state.normalizers, stats, batch_per_device)

    update_count = state.update_step + 1
    metrics = Metrics(
        update=update_count, episode_return=summary.mean_return, episode_length=summary.mean_length,
        episodes_completed=summary.completed, loss=step_metrics.loss, grad_norm=step_metrics.grad_norm,
        explained_variance=explained_variance(ev_moments, batch_per_device), learning_rate=hp.lr,
        ent_coef=hp.ent_coef, clip_eps=hp.clip_eps,
        invalid_action_masks=None if invalid is None else jnp.sum(invalid),
        replicas_in_sync=replicas_in_sync(params, axis_name) if check_replicas else None,
        steps_per_update=config.batch_size,
    )
    state = state.replace(params=params, opt_state=opt_state, env=carry.replace(episodes=episodes),
                          normalizers=normalizers, key=key, update_step=update_count)
    return state, metrics


def progress_interval(config: PPOConfig) -> int:
    """Updates between progress callbacks: about 100 per run (the host throttles printing further)."""
    return max(1, config.num_updates // 100)


def emit_progress(config: PPOConfig, progress_fn: ProgressFn | None, index: jax.Array, last_index: jax.Array | int,
                  metrics: Metrics, axis_name: str | None) -> None:
    """Call progress_fn on the host every progress_interval updates of a chunk and at its last update.

    The predicate depends only on the scan index, the chunk length and the device index, never on vmapped values,
    so under `jax.vmap` over seeds it stays a real branch (a batched predicate would run the callback every
    update), and only the first device reports.
    """
    if progress_fn is None:
        return
    due = ((index + 1) % progress_interval(config) == 0) | (index == last_index)
    due = due & (index <= last_index) & (device_index(axis_name) == 0)
    payload = {"update": metrics.update, "episode_return": metrics.episode_return,
               "episode_length": metrics.episode_length}

    def send(payload):
        jax.debug.callback(lambda p: progress_fn({k: np.asarray(v) for k, v in p.items()}), payload)

    lax.cond(due, send, lambda _: None, payload)


def run_updates(agent: Agent, loss_fn: LossFn, state: TrainState, num_updates: int,
                axis_name: str | None = None, progress_fn: ProgressFn | None = None, check_replicas: bool = False,
                num_valid: jax.Array | None = None) -> tuple[TrainState, Metrics]:
    """num_updates updates as one lax.scan; metrics stacked along a leading [num_updates] axis.

    With num_valid (int32 [], not vmapped) only the first num_valid updates run and the rest leave the state as it
    is (their metrics are zeros): one compiled chunk program then serves chunks of any length up to num_updates.
    """

    def update(state):
        return update_step(agent, loss_fn, state, axis_name, check_replicas)

    if num_valid is None:
        def body(state, index):
            state, metrics = update(state)
            emit_progress(agent.config, progress_fn, index, num_updates - 1, metrics, axis_name)
            return state, metrics
    else:
        metrics_shape = jax.eval_shape(lambda s: update(s)[1], state)

        def skip(state):
            return state, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), metrics_shape)

        def body(state, index):
            state, metrics = lax.cond(index < num_valid, update, skip, state)
            emit_progress(agent.config, progress_fn, index, num_valid - 1, metrics, axis_name)
            return state, metrics

    return lax.scan(body, state, jnp.arange(num_updates))


class TrainParts(NamedTuple):
    """A run split in two pure functions, so long runs can be cut into compiled chunks.

    init(key, hparams) -> TrainState; run(state, num_updates, num_valid=None) -> (TrainState, Metrics
    [num_updates]). `run` continues exactly where `state` stands (update counter, keys, hyperparameters and their
    schedules), so any split of config.num_updates into chunks gives the result of one uninterrupted `train(key)`.
    num_updates is static; num_valid (see run_updates) lets one program run shorter chunks.
    """

    init: Callable[[jax.Array, HParams], TrainState]
    run: Callable[..., tuple[TrainState, Metrics]]
    agent: Agent
    loss_fn: LossFn


def state_partition(state: TrainState) -> TrainState:
    """PartitionSpecs of a TrainState: per-environment arrays split over the device axis, the rest replicated."""
    env_specs = jax.tree.map(lambda x: P(DEVICE_AXIS) if x.ndim >= 1 else P(), state.env)
    return jax.tree.map(lambda _: P(), state).replace(env=env_specs)


def make_train_parts(config: PPOConfig, env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss,
                     progress_fn: ProgressFn | None = None, check_replicas: bool = False) -> TrainParts:
    """init/run for this config: on one device as they are, over every device of the run through
    jaxppo.distributed (config.num_devices per process, over all processes)."""
    agent = make_agent(config, env, env_params)
    config.check_layout(jax.process_count())
    total_devices = config.num_devices * jax.process_count()
    if total_devices == 1:
        return TrainParts(
            init=lambda key, hp: init_state(agent, key, hp),
            run=lambda state, num_updates, num_valid=None: run_updates(
                agent, loss_fn, state, num_updates, progress_fn=progress_fn, check_replicas=check_replicas,
                num_valid=num_valid),
            agent=agent, loss_fn=loss_fn,
        )
    mesh = distributed.make_mesh(config.num_devices)
    specs = state_partition(jax.eval_shape(lambda k: init_state(agent, k, default_hparams(config, loss_fn)),
                                           jax.random.key(0)))

    def init_local(key_data: jax.Array, hp: HParams) -> TrainState:
        return init_state(agent, jax.random.wrap_key_data(key_data), hp, DEVICE_AXIS)

    init_mapped = distributed.map_over_devices(init_local, mesh, (P(), P()), specs)

    def run(state: TrainState, num_updates: int, num_valid: jax.Array | None = None):
        def run_local(state, num_valid):
            return run_updates(agent, loss_fn, state, num_updates, DEVICE_AXIS, progress_fn, check_replicas,
                               num_valid)

        mapped = distributed.map_over_devices(run_local, mesh, (specs, P()), (specs, P()))
        return mapped(state, num_valid)

    return TrainParts(init=lambda key, hp: init_mapped(jax.random.key_data(key), hp), run=run, agent=agent,
                      loss_fn=loss_fn)


def make_train(config: PPOConfig, env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss,
               progress_fn: ProgressFn | None = None,
               check_replicas: bool = False) -> Callable[..., tuple[TrainState, Metrics]]:
    """Build train(key, hparams=None) -> (TrainState, Metrics): the whole run as one pure function.

    `train` is pure: jit it, vmap it over keys (seeds) and/or over a batch of HParams. Metrics have a leading axis
    of config.num_updates updates. With several devices (config.num_devices, or several processes) the same
    per-device program runs on each, on its share of the environments.

    Args:
      config: the run's static settings.
      env, env_params: an environment instance (gymnax Environment or a jaxppo adapter) instead of config.env.
      loss_fn: the loss (default ppo_loss; see jaxppo.losses for the signature).
      progress_fn: receives {update, episode_return, episode_length} from inside the compiled run about 100 times
        per run (under vmap: once per seed; on several devices: from the first device only).
      check_replicas: fill metrics.replicas_in_sync (parameters identical on every device; costs a collective).
    """
    return train_from_parts(config, make_train_parts(config, env, env_params, loss_fn, progress_fn, check_replicas))


def default_hparams(config: PPOConfig, loss_fn: LossFn = ppo_loss) -> HParams:
    """The HParams a run starts from: the config's traced values plus the loss's declared coefficients."""
    return HParams.from_config(config, loss_hyperparameters(loss_fn))


def train_from_parts(config: PPOConfig, parts: TrainParts) -> Callable[..., tuple[TrainState, Metrics]]:
    """train(key, hparams=None): init, then all config.num_updates updates in one call of parts.run."""

    def train(key: jax.Array, hparams: HParams | None = None) -> tuple[TrainState, Metrics]:
        hp = default_hparams(config, parts.loss_fn) if hparams is None else hparams
        return parts.run(parts.init(key, hp), config.num_updates)

    return train
