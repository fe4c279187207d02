"""Test session setup (before jax is imported): fake CPU devices for the collective tests, and a compilation cache
for the session.

Eight fake devices, of which the tests use at most four (devices to spare, as the README advises for vmapped
programs with collectives on fake CPU devices). The persistent compilation cache lives in a fresh temporary folder
for this session only (subprocesses started by tests inherit it): many tests compile the same tiny programs, and
XLA then compiles each once.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = tempfile.mkdtemp(prefix="jaxppo-test-compilation-cache-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
