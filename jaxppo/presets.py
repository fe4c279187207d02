"""Named per-environment settings (`jaxppo train --preset breakout-minatar`) and published reference returns.

A preset is a set of `PPOConfig` field values for one environment, tuned so that jaxppo reaches (or beats) the
reference PPO return published in the gymnax README at the preset's `total_timesteps` (its "full" budget, sized
for a GPU). Preset names are gymnax ids in lower case ("cartpole-v1", "breakout-minatar"); the exact id is accepted
too. Explicit fields given next to a preset win over the preset's values.

    config = preset_config("pendulum-v1", total_timesteps=200_000)
"""

from __future__ import annotations

import difflib
from typing import Any

from jaxppo.config import PPOConfig

PRESETS: dict[str, dict[str, Any]] = {
    "cartpole-v1": dict(env="CartPole-v1", num_envs=4, num_steps=128, total_timesteps=500_000, lr=2.5e-4,
                        num_epochs=4, num_minibatches=4, ent_coef=0.01),
    "acrobot-v1": dict(env="Acrobot-v1", num_envs=16, num_steps=128, total_timesteps=1_000_000, lr=2.5e-4,
                       num_epochs=4, num_minibatches=4, ent_coef=0.01),
    "pendulum-v1": dict(env="Pendulum-v1", num_envs=16, num_steps=128, total_timesteps=1_000_000, lr=3e-4,
                        num_epochs=10, num_minibatches=32, ent_coef=0.0, gamma=0.95, normalize_observations=True,
                        normalize_rewards=True),
    "breakout-minatar": dict(env="Breakout-MinAtar", num_envs=128, num_steps=128, total_timesteps=10_000_000,
                             lr=5e-4, num_epochs=4, num_minibatches=8, ent_coef=0.01, activation="relu"),
}
"""Preset name -> PPOConfig field values (fields not named keep the PPOConfig default)."""

REFERENCE_RETURNS: dict[str, float] = {
    "Acrobot-v1": -80.0,
    "Pendulum-v1": -130.0,
    "CartPole-v1": 500.0,
    "MountainCar-v0": -118.0,
    "MountainCarContinuous-v0": 92.0,
    "Asterix-MinAtar": 15.0,
    "Breakout-MinAtar": 28.0,
    "Freeway-MinAtar": 58.0,
    "SpaceInvaders-MinAtar": 131.0,
    "Catch-bsuite": 1.0,
    "DeepSea-bsuite": 0.0,
    "MemoryChain-bsuite": 0.1,
    "UmbrellaChain-bsuite": 1.0,
    "DiscountingChain-bsuite": 1.1,
    "FourRooms-misc": 1.0,
}
"""Return of the trained PPO checkpoints listed in the gymnax README ("Ckpt (Return)" column, gymnax-blines
agents), by gymnax id; environments with no PPO entry there are absent."""


def preset_names() -> tuple[str, ...]:
    """Every preset name, sorted."""
    return tuple(sorted(PRESETS))


def preset_values(name: str) -> dict[str, Any]:
    """The PPOConfig field values of a preset (a copy); ValueError naming close matches for an unknown name."""
    key = name.lower()
    if key not in PRESETS:
        close = difflib.get_close_matches(key, preset_names(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(preset_names())}"
        raise ValueError(f"preset={name!r}: no such preset; {hint}")
    return dict(PRESETS[key])


def preset_config(name: str, **overrides: Any) -> PPOConfig:
    """PPOConfig of a preset, with `overrides` (any PPOConfig fields) taking precedence.

    Raises:
      ValueError: unknown preset, unknown field name, or a resulting config that fails validation.
    """
    fields = set(PPOConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"preset_config({name!r}): unknown PPOConfig field(s) {', '.join(unknown)}")
    return PPOConfig(**{**preset_values(name), **overrides})
