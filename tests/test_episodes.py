"""Episode statistics: running sums per environment, tallies of finished episodes, NaN before the first one."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxppo.episodes import close_tally, empty_tally, init_episode_stats, track_episodes


def test_episode_tally_and_carried_means():
    stats = init_episode_stats(3)
    tally = empty_tally()
    rewards = jnp.array([1.0, 2.0, 3.0])
    stats, tally = track_episodes(stats, tally, rewards, jnp.array([False, False, False]))
    stats, tally = track_episodes(stats, tally, rewards, jnp.array([True, False, True]))
    # Env 0 ended with return 1+1 = 2, env 2 with 3+3 = 6, both after 2 steps; env 1 still runs (4 so far).
    np.testing.assert_allclose(stats.returns, [0.0, 4.0, 0.0])
    np.testing.assert_array_equal(stats.lengths, [0, 2, 0])
    stats, summary = close_tally(stats, tally)
    assert (float(summary.mean_return), float(summary.mean_length), float(summary.completed)) == (4.0, 2.0, 2.0)
    # A rollout in which nothing ends repeats the previous means.
    _, summary = close_tally(stats, empty_tally())
    assert (float(summary.mean_return), float(summary.completed)) == (4.0, 0.0)


def test_means_are_nan_until_the_first_episode_ends():
    # No return exists yet: 0 would read as a real value (Pendulum's curve would start at the optimum).
    stats = init_episode_stats(2)
    stats, tally = track_episodes(stats, empty_tally(), jnp.array([-5.0, -7.0]), jnp.array([False, False]))
    stats, summary = close_tally(stats, tally)
    assert np.isnan(float(summary.mean_return)) and np.isnan(float(summary.mean_length))
    assert float(summary.completed) == 0.0
    stats, tally = track_episodes(stats, empty_tally(), jnp.array([-1.0, -1.0]), jnp.array([True, False]))
    _, summary = close_tally(stats, tally)
    assert float(summary.mean_return) == -6.0 and float(summary.mean_length) == 2.0
