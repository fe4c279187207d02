"""Counter-based random words: many independent uint32 words from one key in ONE threefry evaluation.

Word (hi, lo) of a key is threefry2x32(key, (hi, lo)): a pure function of the key and the two counters, so e.g.
the randomness of environment e at step t depends on (e, t) alone, whichever device computes it. jax.random derives
such words through chains of fold_in / split / bits, each a separate threefry kernel in the compiled program; one
call with explicit counters keeps programs small and fast to compile. Keys of another PRNG implementation (rbg)
fall back to jax.random with that implementation's own contract: deterministic, but not promised equal under other
batching, so layout invariance holds for threefry keys (JAX's default) only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _is_threefry(key: jax.Array) -> bool:
    return "threefry" in str(jax.random.key_impl(key))


def counter_words(key: jax.Array, hi: jax.Array, lo: jax.Array) -> jax.Array:
    """uint32 [*shape, 2]: two random words for every counter pair (hi[i], lo[i]) (uint32 arrays of one shape)."""
    hi, lo = jnp.broadcast_arrays(jnp.asarray(hi, jnp.uint32), jnp.asarray(lo, jnp.uint32))
    if not _is_threefry(key):
        def pair(h, l):
            return jax.random.bits(jax.random.fold_in(jax.random.fold_in(key, h), l), (2,), jnp.uint32)

        return jax.vmap(pair)(hi.ravel(), lo.ravel()).reshape(hi.shape + (2,))
    from jax.extend.random import threefry_2x32

    size = hi.size
    out = threefry_2x32(jax.random.key_data(key), jnp.concatenate([hi.ravel(), lo.ravel()]))
    return jnp.stack([out[:size], out[size:]], axis=-1).reshape(hi.shape + (2,))


def words(key: jax.Array, hi: jax.Array, count: int) -> jax.Array:
    """uint32 [*hi.shape, count]: `count` random words for each value of the counter array hi (uint32)."""
    pairs = (count + 1) // 2
    hi = jnp.asarray(hi, jnp.uint32)[..., None]
    lo = jnp.arange(pairs, dtype=jnp.uint32)
    out = counter_words(key, hi, lo)  # [*hi.shape, pairs, 2]
    return out.reshape(out.shape[:-2] + (2 * pairs,))[..., :count]
