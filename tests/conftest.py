"""Test session setup: fake CPU devices for the collective tests (must happen before jax is imported).

Eight fake devices, of which the tests use at most four: XLA:CPU's in-process collectives were seen to deadlock
(jax 0.10.2, 2 cores) when a vmapped program keeps *every* fake device busy, and never with devices to spare.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
