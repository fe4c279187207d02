"""Counter-based random words: a pure function of (key, counters), uniform bits, and the non-threefry fallback."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.random_words import counter_words, words


def test_words_depend_on_the_counters_only_and_look_uniform():
    key = jax.random.key(3)
    all_rows = counter_words(key, jnp.arange(8)[:, None], jnp.arange(4)[None, :])
    assert all_rows.shape == (8, 4, 2) and all_rows.dtype == jnp.uint32
    # Row 5 computed alone equals row 5 computed with the others (layout invariance's building block).
    np.testing.assert_array_equal(counter_words(key, jnp.full((1, 4), 5), jnp.arange(4)[None, :])[0], all_rows[5])
    assert len(np.unique(np.asarray(all_rows))) == all_rows.size
    many = np.asarray(words(key, jnp.arange(50_000), 3)).ravel()
    fractions = np.unpackbits(many.view(np.uint8)).mean()
    assert abs(fractions - 0.5) < 0.002  # every bit is a fair coin
    assert not np.array_equal(np.asarray(words(jax.random.key(4), jnp.arange(4), 3)),
                              np.asarray(words(key, jnp.arange(4), 3)))


def test_other_prng_implementations_fall_back_to_jax_random():
    # rbg keys: jax.random's own contract (deterministic, but not promised equal under different batching).
    key = jax.random.key(0, impl="rbg")
    drawn = words(key, jnp.arange(6), 5)
    assert drawn.shape == (6, 5) and drawn.dtype == jnp.uint32
    np.testing.assert_array_equal(words(key, jnp.arange(6), 5), drawn)
    assert len(np.unique(np.asarray(drawn))) == drawn.size
