"""Checkpoints of the full training state with orbax-checkpoint (`CheckpointManager`, keep-last-N).

A checkpoint holds every array of the TrainState (params, optimizer state, env states, normaliser statistics, PRNG
key data, update counter; a leading seed axis when several seeds train together) plus a JSON record of the config.
Saves are synchronous and committed atomically by orbax (written under a temporary name, then renamed), so a run
killed during a save resumes from the last complete checkpoint. Restoring reads plain arrays into a template
built from the config: no pickled objects are ever loaded. Nothing here deletes or overwrites an existing
checkpoint except orbax's keep-last-N rotation of the run's own older steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxppo.outputs import config_to_dict
from jaxppo.config import PPOConfig

IDENTITY_FIELDS = ("env", "num_envs", "num_steps", "hidden_sizes", "activation", "network", "num_devices")
"""Config fields that fix the shapes of the saved state: a checkpoint is refused if any of them differs."""


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is only needed when checkpointing

    return ocp


def to_host_state(state: Any) -> Any:
    """TrainState (typed PRNG key) -> tree of numpy arrays with the key as raw key data."""
    state = state.replace(key=jax.random.key_data(state.key))
    return jax.tree.map(np.asarray, state)


def from_host_state(host_state: Any) -> Any:
    """Inverse of to_host_state."""
    return host_state.replace(key=jax.random.wrap_key_data(np.asarray(host_state.key)))


class CheckpointStore:
    """Checkpoints of one run in `directory` (one sub-folder per update count)."""

    def __init__(self, directory: Path, config: PPOConfig, max_to_keep: int = 3):
        ocp = _ocp()
        self.directory = Path(directory).absolute()
        self.config = config
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Update counts of the complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save the state after `step` updates, with the config and `meta` (JSON-ready) alongside."""
        ocp = _ocp()
        record = {"config": config_to_dict(self.config), "step": int(step), **meta}
        self._manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(to_host_state(state)), meta=ocp.args.JsonSave(record)))
        self._manager.wait_until_finished()

    def restore(self, step: int, template_state: Any) -> tuple[Any, dict[str, Any]]:
        """Read checkpoint `step` into the structure of template_state (a TrainState of the current config).

        Raises ValueError with the reason when the checkpoint is unreadable or belongs to another setup; nothing on
        disk is changed either way.
        """
        ocp = _ocp()
        where = self.directory / str(step)
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as error:  # orbax raises many types for damaged files
            raise ValueError(f"checkpoint {where}: unreadable metadata ({type(error).__name__}: {error}); nothing "
                             "was changed") from None
        self.check_compatible(meta.get("config", {}), where)
        template = to_host_state(template_state)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template))).state
        except Exception as error:
            raise ValueError(f"checkpoint {where}: unreadable state ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:300]}); nothing was changed") from None
        mismatched = [
            jax.tree_util.keystr(path) for path, got, want in _paired_leaves(restored, template)
            if np.shape(got) != np.shape(want) or np.asarray(got).dtype != np.asarray(want).dtype
        ]
        if mismatched:
            raise ValueError(f"checkpoint {where}: arrays {mismatched[:5]} do not match this run's shapes; it "
                             "belongs to another setup")
        return from_host_state(restored), meta

    def close(self) -> None:
        """Release orbax's background resources."""
        self._manager.close()

    def check_compatible(self, saved_config: dict[str, Any], where: Path) -> None:
        """ValueError naming the fields whose saved value differs from this run's config."""
        current = config_to_dict(self.config)
        differing = [f"{name} (saved {saved_config.get(name)!r}, now {current[name]!r})"
                     for name in IDENTITY_FIELDS if saved_config.get(name) != current[name]]
        if differing:
            raise ValueError(f"checkpoint {where}: made for another setup: {', '.join(differing)}")


def _paired_leaves(tree: Any, template: Any):
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    want = jax.tree.leaves(template)
    return [(path, leaf, ref) for (path, leaf), ref in zip(got, want)]
