"""Cross-device statistics: one gather, combined identically everywhere, equal to the single-device statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jaxppo.collectives import DEVICE_AXIS, Moments, combine_moments, gather, local_moments, pmean_flat


def _mesh(n):
    return Mesh(np.array(jax.devices()[:n]), (DEVICE_AXIS,))


def test_combined_moments_equal_numpy_over_the_union():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, size=(50, 3)).astype(np.float32) for _ in range(4)]
    gathered = Moments(*(jnp.stack(x) for x in zip(*(local_moments(jnp.asarray(p), (0,)) for p in parts))))
    mean, var = combine_moments(gathered, 50)
    union = np.concatenate(parts)
    np.testing.assert_allclose(mean, union.mean(0), rtol=1e-5)
    np.testing.assert_allclose(var, union.var(0), rtol=1e-4)
    # Far from zero the two-pass form keeps its precision (no E[x^2] - E[x]^2 cancellation).
    shifted = [p + 1e4 for p in parts]
    gathered = Moments(*(jnp.stack(x) for x in zip(*(local_moments(jnp.asarray(p), (0,)) for p in shifted))))
    np.testing.assert_allclose(combine_moments(gathered, 50)[1], union.var(0), rtol=2e-2)


def test_gather_and_flat_pmean_over_devices():
    data = jnp.arange(8.0).reshape(4, 2)

    def per_device(x):
        tree = {"a": x[0], "b": (x * 2)[0, :1]}
        return gather(tree, DEVICE_AXIS), pmean_flat(tree, DEVICE_AXIS)

    gathered, mean = jax.jit(jax.shard_map(per_device, mesh=_mesh(4), in_specs=P(DEVICE_AXIS), out_specs=P(),
                                           check_vma=False))(data)
    np.testing.assert_array_equal(gathered["a"], np.asarray(data))  # device order
    np.testing.assert_array_equal(gathered["b"][:, 0], np.asarray(data[:, 0] * 2))
    np.testing.assert_allclose(mean["a"], np.asarray(data).mean(0))
    # One device: gather adds a leading axis of 1, pmean_flat is the identity.
    single = gather({"a": data[0]}, None)
    np.testing.assert_array_equal(single["a"], np.asarray(data[:1]))
    assert pmean_flat({"a": data}, None)["a"] is data
