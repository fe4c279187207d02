"""GAE: hand-worked cases and two plain-NumPy references that walk forward through each episode segment."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxppo.advantages import gae

T, B = 17, 5


# ------------------------------------------------------------------------------------------- NumPy references
def _segment_end(done: np.ndarray, t: int) -> int:
    """Last step of the segment that starts at t: the first done step at or after t, else the rollout's last step."""
    for k in range(t, len(done)):
        if done[k]:
            return k
    return len(done) - 1


def np_gae_delta_sum(r, v, v_next, terminated, done, gamma, lam, horizon=0):
    """A_t = sum_{k=0}^{e-t} (gamma lam)^k delta_{t+k}, e = end of t's episode segment; one env at a time. With a
    horizon k, e is at most the last step of t's unroll (steps [jk, (j+1)k) of the rollout).

    Valid for any inputs: delta is formed per step from its own v_next, so nothing needs v_next_t == v_{t+1}.
    """
    adv = np.zeros(r.shape, np.float64)
    for b in range(r.shape[1]):
        for t in range(r.shape[0]):
            end = _segment_end(done[:, b], t)
            if horizon:
                end = min(end, (t // horizon + 1) * horizon - 1)
            for k in range(end - t + 1):
                s = t + k
                delta = r[s, b] + gamma * (0.0 if terminated[s, b] else v_next[s, b]) - v[s, b]
                adv[t, b] += (gamma * lam) ** k * delta
    return adv


def np_lambda_return(r, v, v_next, terminated, done, gamma, lam):
    """Advantages from the episode-view lambda-return, a weighted mix of n-step returns; one env at a time.

        G^(n)_t  = sum_{k<n} gamma^k r_{t+k} + gamma^n (1 - terminated_{t+n-1}) v_next_{t+n-1}
        G^lam_t  = (1 - lam) sum_{n=1}^{N-1} lam^(n-1) G^(n)_t + lam^(N-1) G^(N)_t,    N = steps left in the segment
        A_t      = G^lam_t - v_t

    Equals GAE only for consistent rollouts, where v_next_t == v_{t+1} inside an episode.
    """
    adv = np.zeros(r.shape, np.float64)
    for b in range(r.shape[1]):
        for t in range(r.shape[0]):
            n_max = _segment_end(done[:, b], t) - t + 1
            n_step = []
            discounted = 0.0
            for n in range(1, n_max + 1):
                last = t + n - 1
                discounted += gamma ** (n - 1) * r[last, b]
                bootstrap = 0.0 if terminated[last, b] else v_next[last, b]
                n_step.append(discounted + gamma**n * bootstrap)
            g = sum((1.0 - lam) * lam ** (n - 1) * n_step[n - 1] for n in range(1, n_max))
            g += lam ** (n_max - 1) * n_step[-1]
            adv[t, b] = g - v[t, b]
    return adv


def np_vtrace_advantages(r, v, v_next, terminated, done, gamma, lam, horizon=0):
    """Brax's PPO's policy advantages from the lambda-returns G = A^GAE + v (NumPy reference above), one env at a time:

        A_t = r_t + gamma * (1 - terminated_t) * next_t - v_t,   next_t = G_{t+1}, or v_next_t where t ends its
                                                                 episode segment or its unroll (or the rollout).
    """
    targets = np_gae_delta_sum(r, v, v_next, terminated, done, gamma, lam, horizon) + v
    adv = np.zeros(r.shape, np.float64)
    for b in range(r.shape[1]):
        for t in range(r.shape[0]):
            last_of_unroll = bool(horizon) and (t + 1) % horizon == 0
            cut = done[t, b] or last_of_unroll or t == r.shape[0] - 1
            following = v_next[t, b] if cut else targets[t + 1, b]
            adv[t, b] = r[t, b] + gamma * (0.0 if terminated[t, b] else following) - v[t, b]
    return adv


def _random_rollout(seed: int, consistent: bool):
    """[T, B] rewards, values and flags with episode ends in the middle and at the last step.

    env 0: terminated at t=4;  env 1: truncated at t=6, terminated at the last step;  env 2: terminated AND
    truncated at t=9 (bootstraps 0);  env 3: truncated at the last step;  env 4: random ends only.
    """
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, B)).astype(np.float32)
    v = rng.normal(size=(T, B)).astype(np.float32)
    terminated = rng.random((T, B)) < 0.08
    truncated = rng.random((T, B)) < 0.08
    terminated[4, 0] = True
    truncated[6, 1] = True
    terminated[T - 1, 1] = True
    terminated[9, 2] = truncated[9, 2] = True
    truncated[T - 1, 3] = True
    done = terminated | truncated
    # Value of the observation reached: the next step's value inside an episode; an independent "final
    # observation" value where the episode ended or the rollout stops.
    final_values = rng.normal(size=(T, B)).astype(np.float32)
    if consistent:
        v_next = np.concatenate([v[1:], final_values[-1:]], axis=0)
        v_next = np.where(done, final_values, v_next)
    else:
        v_next = final_values
    return r, v, v_next, terminated, done


def _gae(r, v, v_next, terminated, done, gamma, lam, horizon=0, form="gae"):
    return gae(jnp.asarray(r, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(v_next, jnp.float32),
               jnp.asarray(terminated), jnp.asarray(done), gamma, lam, horizon, form)


# ------------------------------------------------------------------------------------------ random rollouts
def test_matches_lambda_return_of_each_episode():
    r, v, v_next, terminated, done = _random_rollout(seed=0, consistent=True)
    assert done[:-1].any() and done[-1].any()  # episode ends in the middle and at the last step
    adv, ret = _gae(r, v, v_next, terminated, done, 0.97, 0.9)
    chex.assert_shape((adv, ret), (T, B))
    expected = np_lambda_return(r, v, v_next, terminated, done, 0.97, 0.9)
    chex.assert_trees_all_close(np.asarray(adv), expected.astype(np.float32), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(np.asarray(ret), (expected + v).astype(np.float32), rtol=1e-5, atol=1e-5)


def test_matches_delta_sum_on_arbitrary_bootstrap_values():
    # v_next independent of v everywhere: only the per-step delta definition matches.
    r, v, v_next, terminated, done = _random_rollout(seed=1, consistent=False)
    adv, ret = _gae(r, v, v_next, terminated, done, 0.9, 0.8)
    expected = np_gae_delta_sum(r, v, v_next, terminated, done, 0.9, 0.8)
    chex.assert_trees_all_close(np.asarray(adv), expected.astype(np.float32), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(np.asarray(ret), (expected + v).astype(np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("horizon", [1, 3, 5, T])
def test_a_horizon_cuts_every_advantage_at_the_end_of_its_unroll(horizon):
    # Brax's PPO computes GAE over unrolls of unroll_length steps: each advantage sums the TD errors up to the end
    # of its episode segment or of its unroll, whichever comes first (horizon 5 does not divide T = 17: the last
    # unroll has 2 steps; horizon T cuts nothing but episode ends).
    r, v, v_next, terminated, done = _random_rollout(seed=4, consistent=False)
    adv, ret = _gae(r, v, v_next, terminated, done, 0.9, 0.8, horizon)
    expected = np_gae_delta_sum(r, v, v_next, terminated, done, 0.9, 0.8, horizon)
    chex.assert_trees_all_close(np.asarray(adv), expected.astype(np.float32), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(np.asarray(ret), (expected + v).astype(np.float32), rtol=1e-5, atol=1e-5)
    if horizon == T:
        chex.assert_trees_all_close(adv, _gae(r, v, v_next, terminated, done, 0.9, 0.8)[0])


@pytest.mark.parametrize("horizon", [0, 5])
def test_vtrace_form_matches_braxs_formula_and_keeps_the_lambda_returns(horizon):
    r, v, v_next, terminated, done = _random_rollout(seed=5, consistent=True)
    adv, ret = _gae(r, v, v_next, terminated, done, 0.97, 0.9, horizon, form="vtrace")
    expected = np_vtrace_advantages(r, v, v_next, terminated, done, 0.97, 0.9, horizon)
    chex.assert_trees_all_close(np.asarray(adv), expected.astype(np.float32), rtol=1e-5, atol=1e-5)
    _, gae_ret = _gae(r, v, v_next, terminated, done, 0.97, 0.9, horizon)
    chex.assert_trees_all_close(ret, gae_ret)  # the value targets are the lambda-returns in both forms
    assert np.abs(np.asarray(adv) - (np.asarray(ret) - v)).max() > 0.1  # and the advantages are not GAE's


def test_vtrace_form_is_gae_at_lambda_one():
    r, v, v_next, terminated, done = _random_rollout(seed=6, consistent=True)
    chex.assert_trees_all_close(_gae(r, v, v_next, terminated, done, 0.9, 1.0, form="vtrace"),
                                _gae(r, v, v_next, terminated, done, 0.9, 1.0), rtol=1e-6, atol=1e-6)


def test_unknown_form_raises():
    r, v, v_next, terminated, done = _random_rollout(seed=3, consistent=False)
    with pytest.raises(ValueError, match="form='impala'"):
        _gae(r, v, v_next, terminated, done, 0.9, 0.9, form="impala")


def test_terminated_and_truncated_step_bootstraps_zero():
    r, v, v_next, terminated, done = _random_rollout(seed=0, consistent=True)
    adv, _ = _gae(r, v, v_next, terminated, done, 0.97, 0.9)
    # env 2 ends at t=9, terminated and truncated: delta_9 = r_9 - v_9 and nothing from t=10 flows back.
    np.testing.assert_allclose(float(adv[9, 2]), r[9, 2] - v[9, 2], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ hand-worked cases
def _one_env(*columns):
    return [np.asarray(c)[:, None] for c in columns]


def test_no_dones_lambda_one_is_discounted_return_minus_value():
    r, v, v_next = _one_env([1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [1.0, 1.5, 2.0])
    never = np.zeros((3, 1), bool)
    adv, ret = _gae(r, v, v_next, never, never, 0.9, 1.0)
    # lambda = 1: A_t = sum_k 0.9^k r_{t+k} + 0.9^(3-t) v_next_2 - v_t, bootstrapping from v_next_2 = 2.0
    # A_2 = 3 + 0.9*2.0 - 1.5                          = 3.3
    # A_1 = 2 + 0.9*3 + 0.81*2.0 - 1.0 = 2 + 2.7 + 1.62 - 1.0 = 5.32
    # A_0 = 1 + 0.9*2 + 0.81*3 + 0.729*2.0 - 0.5 = 1 + 1.8 + 2.43 + 1.458 - 0.5 = 6.188
    # returns = A + v = [6.688, 6.32, 4.8]
    chex.assert_trees_all_close(adv[:, 0], jnp.array([6.188, 5.32, 3.3]), rtol=1e-5)
    chex.assert_trees_all_close(ret[:, 0], jnp.array([6.688, 6.32, 4.8]), rtol=1e-5)


def test_truncation_bootstraps_from_final_value_and_cuts_the_trace():
    # v_next_1 = 10 is the value of the final observation of the truncated episode (v_2 = 4 is the reset obs).
    r, v, v_next = _one_env([1.0, 1.0, 1.0], [2.0, 3.0, 4.0], [3.0, 10.0, 5.0])
    terminated = np.zeros((3, 1), bool)
    done = np.array([[False], [True], [False]])
    adv, ret = _gae(r, v, v_next, terminated, done, 0.9, 0.8)
    # gamma*lambda = 0.72
    # delta_2 = 1 + 0.9*5  - 4 = 1.5                     A_2 = 1.5
    # delta_1 = 1 + 0.9*10 - 3 = 7.0                     A_1 = 7.0  (leaking A_2 would give 7 + 0.72*1.5 = 8.08)
    # delta_0 = 1 + 0.9*3  - 2 = 1.7                     A_0 = 1.7 + 0.72*7.0 = 6.74
    # returns = [8.74, 10.0, 5.5]
    chex.assert_trees_all_close(adv[:, 0], jnp.array([6.74, 7.0, 1.5]), rtol=1e-5)
    chex.assert_trees_all_close(ret[:, 0], jnp.array([8.74, 10.0, 5.5]), rtol=1e-5)


@pytest.mark.parametrize("also_truncated", [False, True])
def test_termination_bootstraps_zero(also_truncated):
    r, v, v_next = _one_env([1.0, 1.0, 1.0], [2.0, 3.0, 4.0], [3.0, 10.0, 5.0])
    terminated = np.array([[False], [True], [False]])
    truncated = np.array([[False], [also_truncated], [False]])
    adv, ret = _gae(r, v, v_next, terminated, terminated | truncated, 0.9, 0.8)
    # delta_2 = 1 + 0.9*5 - 4 = 1.5                      A_2 = 1.5
    # delta_1 = r_1 - v_1 = 1 - 3 = -2.0  (v_next_1 = 10 ignored)   A_1 = -2.0
    # delta_0 = 1 + 0.9*3 - 2 = 1.7                      A_0 = 1.7 + 0.72*(-2.0) = 0.26
    # returns = [2.26, 1.0, 5.5]
    chex.assert_trees_all_close(adv[:, 0], jnp.array([0.26, -2.0, 1.5]), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(ret[:, 0], jnp.array([2.26, 1.0, 5.5]), rtol=1e-5, atol=1e-6)


def test_lambda_zero_gives_one_step_td_errors():
    r, v, v_next = _one_env([1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [1.0, 1.5, 2.0])
    terminated = np.array([[False], [False], [True]])
    adv, _ = _gae(r, v, v_next, terminated, terminated, 0.9, 0.0)
    # delta_0 = 1 + 0.9*1.0 - 0.5 = 1.4
    # delta_1 = 2 + 0.9*1.5 - 1.0 = 2.35
    # delta_2 = 3 + 0 - 1.5       = 1.5   (terminated)
    chex.assert_trees_all_close(adv[:, 0], jnp.array([1.4, 2.35, 1.5]), rtol=1e-5)


def test_horizon_two_cuts_the_trace_between_unrolls():
    r, v, v_next = _one_env([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 1.5, 2.0], [1.0, 1.5, 2.0, 2.5])
    never = np.zeros((4, 1), bool)
    adv, ret = _gae(r, v, v_next, never, never, 0.9, 0.5, horizon=2)
    # gamma*lambda = 0.45;  delta_t = r_t + 0.9 v_next_t - v_t
    # delta = [1 + 0.9 - 0.5, 2 + 1.35 - 1, 3 + 1.8 - 1.5, 4 + 2.25 - 2] = [1.4, 2.35, 3.3, 4.25]
    # unroll [0, 1]: A_1 = 2.35, A_0 = 1.4 + 0.45*2.35 = 2.4575   (no trace from step 2 across the cut)
    # unroll [2, 3]: A_3 = 4.25, A_2 = 3.3 + 0.45*4.25 = 5.2125
    chex.assert_trees_all_close(adv[:, 0], jnp.array([2.4575, 2.35, 5.2125, 4.25]), rtol=1e-5)
    chex.assert_trees_all_close(ret[:, 0], jnp.array([2.9575, 3.35, 6.7125, 6.25]), rtol=1e-5)


def test_vtrace_form_by_hand():
    r, v, v_next = _one_env([1.0, 1.0, 1.0], [2.0, 3.0, 4.0], [3.0, 4.0, 5.0])
    terminated = np.array([[False], [False], [True]])
    adv, ret = _gae(r, v, v_next, terminated, terminated, 0.9, 0.5, form="vtrace")
    # gamma*lambda = 0.45;  delta = [1 + 2.7 - 2, 1 + 3.6 - 3, 1 - 4] = [1.7, 1.6, -3.0]  (step 2 terminates)
    # GAE: A_2 = -3.0, A_1 = 1.6 + 0.45*(-3.0) = 0.25, A_0 = 1.7 + 0.45*0.25 = 1.8125;  G = A + v = [3.8125, 3.25, 1.0]
    # vtrace: A_0 = 1 + 0.9*G_1 - 2 = 1 + 2.925 - 2 = 1.925;  A_1 = 1 + 0.9*G_2 - 3 = -1.1;  A_2 = 1 - 4 = -3.0
    chex.assert_trees_all_close(adv[:, 0], jnp.array([1.925, -1.1, -3.0]), rtol=1e-5)
    chex.assert_trees_all_close(ret[:, 0], jnp.array([3.8125, 3.25, 1.0]), rtol=1e-5)


def test_negative_horizon_raises():
    r, v, v_next, terminated, done = _random_rollout(seed=3, consistent=False)
    with pytest.raises(ValueError, match="horizon=-1"):
        _gae(r, v, v_next, terminated, done, 0.9, 0.9, -1)


# --------------------------------------------------------------------------------------- tracing and errors
def test_traced_gamma_under_jit_and_vmap():
    r, v, v_next, terminated, done = _random_rollout(seed=2, consistent=False)
    gammas = jnp.array([0.5, 0.9, 0.99], jnp.float32)

    @jax.jit
    def batched(gammas, lam):
        return jax.vmap(lambda g: _gae(r, v, v_next, terminated, done, g, lam))(gammas)

    adv, ret = batched(gammas, jnp.float32(0.7))
    chex.assert_shape((adv, ret), (3, T, B))
    for i, g in enumerate([0.5, 0.9, 0.99]):
        expected = np_gae_delta_sum(r, v, v_next, terminated, done, g, 0.7)
        chex.assert_trees_all_close(np.asarray(adv[i]), expected.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_mismatched_shapes_raise():
    r, v, v_next, terminated, done = _random_rollout(seed=3, consistent=False)
    with pytest.raises(ValueError, match=r"v_t \(17, 4\)"):
        _gae(r, v[:, :4], v_next, terminated, done, 0.9, 0.9)
    with pytest.raises(ValueError, match=r"done_t \(16, 5\)"):
        _gae(r, v, v_next, terminated, done[:-1], 0.9, 0.9)
