"""Process-level XLA settings that jaxppo needs on CPU, applied once when jaxppo is imported.

XLA:CPU's concurrency-optimised scheduler (jaxlib 0.10.2) was seen to hang `jax.jit(jax.vmap(train))` for some
run lengths on one CPU device: every thread idle, the result never ready (e.g. 2 seeds x 2048 steps of CartPole).
Turning that scheduler off fixed every case we found, at some cost in CPU throughput (about 20% on CartPole
4x128). It is an `xla_cpu_*` flag, so GPU and TPU programs are unaffected. XLA reads flags when the backend
starts, so this works only if jaxppo is imported before the first JAX computation; set XLA_FLAGS yourself (any
value of the flag) or JAXPPO_KEEP_XLA_FLAGS=1 to opt out.
"""

from __future__ import annotations

import os
import warnings

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def apply() -> bool:
    """Add SCHEDULER_FLAG=false to XLA_FLAGS unless set or opted out; True if the process now runs with it off."""
    flags = os.environ.get("XLA_FLAGS", "")
    if SCHEDULER_FLAG in flags:
        return f"{SCHEDULER_FLAG}=false" in flags
    if os.environ.get("JAXPPO_KEEP_XLA_FLAGS"):
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "jaxppo was imported after JAX started its backend, so it could not turn off XLA:CPU's "
            f"concurrency-optimised scheduler, which can hang vmapped training on CPU; set XLA_FLAGS={SCHEDULER_FLAG}"
            "=false before starting Python, or import jaxppo first",
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {SCHEDULER_FLAG}=false".strip()
    return True
