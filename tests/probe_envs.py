"""Probe environments with known values (after Andy Jones' RL debugging probes), written as gymnax envs.

Each isolates one part of PPO: value regression, observation-dependent values, policy improvement, discounting,
and bootstrapping at a time limit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    sign: jax.Array  # float32: observation-dependent probes
    time: int


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 1


class _Probe(environment.Environment):
    """One-dimensional observation, two actions; subclasses set obs, reward and termination."""

    episode_steps = 1  # terminates after this many steps
    max_steps = 1000  # time limit (truncation)

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(max_steps_in_episode=self.max_steps)

    def _sign(self, key):
        return jnp.float32(1.0)

    def reset_env(self, key, params):
        state = ProbeState(sign=self._sign(key), time=0)
        return self._obs(state), state

    def _obs(self, state):
        return jnp.array([state.sign], jnp.float32)

    def _reward(self, state, action):
        return jnp.float32(1.0)

    def step_env(self, key, state, action, params):
        reward = self._reward(state, action)
        state = state.replace(time=state.time + 1)
        terminated = jnp.asarray(state.time >= self.episode_steps)
        return self._obs(state), state, reward, terminated, {}

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-2.0, 2.0, (1,), jnp.float32)

    @property
    def num_actions(self):
        return 2


class ConstantReward(_Probe):
    """One step, reward 1, terminal: V(obs) = 1."""


class ObsDependentReward(_Probe):
    """One step; obs is +1 or -1 at random and the reward equals it: V(+1) = 1, V(-1) = -1."""

    def _sign(self, key):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0).astype(jnp.float32)

    def _reward(self, state, action):
        return state.sign


class ActionDependentReward(_Probe):
    """One step; reward 1 for action 1, 0 for action 0: the policy must pick action 1, V -> 1."""

    def _reward(self, state, action):
        return (action == 1).astype(jnp.float32)


class TwoStepDiscount(_Probe):
    """Two steps: obs 0 then obs 1; reward 1 only on the second step: V(obs 0) = gamma, V(obs 1) = 1."""

    episode_steps = 2

    def _obs(self, state):
        return jnp.array([state.time], jnp.float32)

    def _reward(self, state, action):
        return (state.time == 1).astype(jnp.float32)


class TimeLimitNoTermination(_Probe):
    """Reward 1 every step, constant obs, never terminates; truncated after 5 steps.

    Correct truncation handling bootstraps from the final observation, so V = 1 / (1 - gamma). Treating the time
    limit as a terminal state would instead fit the average truncated sum (about 3.4 for gamma = 0.9).
    """

    episode_steps = 10**9
    max_steps = 5


class MaskedBestAction(_Probe):
    """One step; obs is +1 or -1; three actions paying 1, 0.5 and 0. Action 0 (the best) is illegal when obs is
    +1 (`action_mask`), so the best legal policy is action 1 on +1 and action 0 on -1: return 0.75 on average,
    where a policy that ignored the mask would be sent the illegal action half of the time."""

    def _sign(self, key):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0).astype(jnp.float32)

    def _reward(self, state, action):
        return jnp.array([1.0, 0.5, 0.0], jnp.float32)[action]

    def action_mask(self, state, params):
        return jnp.array([state.sign <= 0, True, True])

    def action_space(self, params=None):
        return spaces.Discrete(3)

    @property
    def num_actions(self):
        return 3


@struct.dataclass
class CueState(environment.EnvState):
    cue: jax.Array  # float32: +1 or -1, shown at t = 0 only
    time: int


class RememberTheCue(environment.Environment):
    """A memory probe: the cue (+1 or -1) is shown only in the first observation [cue, 1]; the next `delay`
    observations are [0, 0]; at the last step the agent is paid +1 for the action matching the cue (0 for +1, 1
    for -1) and -1 otherwise. A memoryless policy cannot beat 0 in expectation; one with memory gets +1."""

    delay = 3

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(max_steps_in_episode=1000)

    def reset_env(self, key, params):
        state = CueState(cue=jnp.where(jax.random.bernoulli(key), 1.0, -1.0).astype(jnp.float32), time=0)
        return self._obs(state), state

    def _obs(self, state):
        first = jnp.asarray(state.time == 0)
        return jnp.array([jnp.where(first, state.cue, 0.0), first.astype(jnp.float32)], jnp.float32)

    def step_env(self, key, state, action, params):
        last = jnp.asarray(state.time >= self.delay)
        right = jnp.where(state.cue > 0, action == 0, action == 1)
        reward = jnp.where(last, jnp.where(right, 1.0, -1.0), 0.0).astype(jnp.float32)
        state = state.replace(time=state.time + 1)
        return self._obs(state), state, reward, jnp.asarray(last), {}

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    @property
    def num_actions(self):
        return 2


class ContinuousTarget(_Probe):
    """One step, continuous actions in [-1, 3]; obs is +1 or -1 and the reward is -(a - target)^2 with target 2.5
    on +1 and -0.5 on -1: the greedy policy must put its action on an obs-dependent target near either end of an
    asymmetric range (best return 0; the centre of the range, 1, is 1.5 from both and returns -2.25)."""

    def _sign(self, key):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0).astype(jnp.float32)

    def _reward(self, state, action):
        target = 1.0 + 1.5 * state.sign
        return -jnp.square(jnp.reshape(action, ()) - target).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Box(-1.0, 3.0, (1,), jnp.float32)

    @property
    def num_actions(self):
        return 1
