"""Environment suites behind one adapter protocol (`jaxppo.envs.protocol`), resolved by id.

    make_env("CartPole-v1")                      # gymnax
    make_env("brax/ant")                          # suite prefix: one adapter module per suite
    make_env("custom", env=my_gymnax_env)         # an instance (gymnax Environment or a protocol adapter)
    canonical_env_id("cartpole-v1")               # 'CartPole-v1': ids and suite prefixes are case-insensitive

To add a suite: write `jaxppo/envs/<suite>_env.py` with `make(name) -> adapter` (and optionally
`registered_ids()`), and add its prefix to SUITES below.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from jaxppo.config import CUSTOM_ENV
from jaxppo.envs.protocol import Env, EnvSpec, TimeStep, reset_batch, resolve_name, step_batch

SUITES: dict[str, tuple[str, str, str]] = {
    # prefix: (adapter module, package it needs, install extra)
    "brax": ("jaxppo.envs.brax_env", "brax", "brax"),
    "jumanji": ("jaxppo.envs.jumanji_env", "jumanji", "jumanji"),
    "craftax": ("jaxppo.envs.craftax_env", "craftax", "craftax"),
    "jaxppo": ("jaxppo.envs.jaxppo_env", "gymnax", ""),  # environments of this project (always installed)
}
"""Suite prefix -> (adapter module, the package it imports, the pip extra that installs it)."""

__all__ = ["CUSTOM_ENV", "Env", "EnvSpec", "SUITES", "TimeStep", "canonical_env_id", "make_env", "reset_batch",
           "step_batch", "split_env_id"]


def split_env_id(env_id: str) -> tuple[str, str]:
    """('brax', 'ant') for 'brax/ant' (or 'Brax/ant'); ('gymnax', id) for an id without a known suite prefix."""
    prefix, sep, name = env_id.partition("/")
    if sep and prefix.lower() in SUITES:
        return prefix.lower(), name
    return "gymnax", env_id


def _gymnax_id(env_id: str) -> str:
    """The registered gymnax id for env_id (exact, else case-insensitive); ValueError naming close matches."""
    from jaxppo.envs import gymnax_env

    try:
        return resolve_name(env_id, gymnax_env.registered_ids(), "gymnax")
    except KeyError as error:
        raise ValueError(
            f"env={env_id!r}: {error.args[0]} (other suites: {', '.join(p + '/<name>' for p in SUITES)}; register "
            "your own with gymnax.register(id, factory), or use env='custom' and pass env=<instance> to make_train)"
        ) from None


def canonical_env_id(env_id: str) -> str:
    """env_id as it is registered: 'cartpole-v1' -> 'CartPole-v1', 'Brax/ant' -> 'brax/ant'.

    gymnax ids are matched exactly, else case-insensitively (ValueError naming close matches when neither
    matches); a suite prefix is lower-cased and the name after it kept (its adapter matches names
    case-insensitively when the run is built). 'custom' is returned as it is.
    """
    if env_id == CUSTOM_ENV:
        return env_id
    suite, name = split_env_id(env_id)
    return _gymnax_id(env_id) if suite == "gymnax" else f"{suite}/{name}"


def _suite_module(suite: str, env_id: str):
    module, package, extra = SUITES[suite]
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"env={env_id!r}: the {package} package is not installed; pip install -e \".[{extra}]\" "
                         "(or pip install -e \".[envs]\" for every suite)")
    return importlib.import_module(module)


def make_env(env_id: str, env: Any = None, env_params: Any = None) -> Env:
    """The adapter for env_id, or for the given instance (with env_id 'custom' or the instance's own id).

    Raises ValueError naming the id and close matches when the id is unknown, and the install command when the
    suite's package is missing.
    """
    from jaxppo.envs import gymnax_env

    if env is not None:
        if hasattr(env, "spec") and isinstance(getattr(env, "spec"), EnvSpec):
            return env  # already an adapter
        if not gymnax_env.is_gymnax_env(env):
            raise ValueError(f"env={env!r}: neither a gymnax Environment (reset/step/action_space/"
                             "observation_space) nor a jaxppo adapter (spec/reset/step)")
        return gymnax_env.GymnaxEnv(env, env_params)
    if env_id == CUSTOM_ENV:
        raise ValueError("env='custom': pass the environment instance as make_train(config, env=...)")
    suite, name = split_env_id(env_id)
    if suite == "gymnax":
        return gymnax_env.make(_gymnax_id(env_id))
    module = _suite_module(suite, env_id)
    try:
        return module.make(name)
    except KeyError as error:
        raise ValueError(f"env={env_id!r}: {error.args[0]}") from None
