"""Checkpoints of the full training state with orbax-checkpoint (`CheckpointManager`, keep-last-N).

A checkpoint holds every array of the TrainState (params, optimizer state, env states and carries, normaliser
statistics, PRNG key data, update counter; a leading seed axis when several seeds train together) plus a JSON
record: the config, the run settings and a checksum of every array. Saves are synchronous and committed atomically
by orbax (written under a temporary name, then renamed), so a run killed during a save resumes from the last
complete checkpoint. Restoring reads plain arrays into a template built from the config (nothing is unpickled)
and verifies the checksums, so a flipped bit is detected; `restore_latest` then falls back to the newest intact
checkpoint and says which ones it skipped.

The checksum of an array is a position-weighted sum of its 32-bit words modulo 2^32, computed by JAX on the
(possibly sharded) global array: the same value on any device layout, so a checkpoint restores on another layout
(elastic resume) and still verifies. Every weight is odd, so any single flipped bit changes the sum.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.config import PPOConfig
from jaxppo.outputs import config_to_dict

IDENTITY_FIELDS = ("env", "num_envs", "num_steps", "hidden_sizes", "activation", "network", "memory", "memory_size")
"""Config fields that fix the shapes of the saved state: a checkpoint is refused if any of them differs."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored; the message names it and says that nothing was changed."""


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is only needed when checkpointing

    return ocp


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """orbax logs routine events as WARNING through absl; keep them off the user's terminal during our calls."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def to_saved(state: Any) -> Any:
    """TrainState (typed PRNG key) -> the same tree with the key as raw key data (plain uint32 arrays)."""
    return state.replace(key=jax.random.key_data(state.key))


def from_saved(saved: Any) -> Any:
    """Inverse of to_saved."""
    return saved.replace(key=jax.random.wrap_key_data(saved.key))


@jax.jit
def _array_checksums(tree: Any) -> list[jax.Array]:
    def one(x):
        words = jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype.itemsize == 4 else x.astype(jnp.uint32)
        flat = words.reshape(-1)
        weights = jnp.arange(flat.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) | jnp.uint32(1)
        return jnp.sum(flat * weights, dtype=jnp.uint32)

    return [one(x) for x in jax.tree.leaves(tree)]


def checksums(tree: Any) -> list[int]:
    """One layout-independent uint32 checksum per array leaf of tree (see the module docstring)."""
    values = _array_checksums(tree)
    return [int(np.asarray(v if getattr(v, "is_fully_addressable", True) else v.addressable_data(0)))
            for v in values]


class Restored(NamedTuple):
    state: Any
    step: int
    meta: dict[str, Any]
    skipped: list[str]  # one line per newer checkpoint that was damaged and passed over
    skipped_steps: list[int]


class CheckpointStore:
    """Checkpoints of one run in `directory` (one sub-folder per update count)."""

    def __init__(self, directory: Path, config: PPOConfig, max_to_keep: int = 3):
        ocp = _ocp()
        self.directory = Path(directory).absolute()
        self.config = config
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        with _quiet_orbax():
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Update counts of the complete checkpoints, ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save the state after `step` updates, with the config, `meta` (JSON-ready) and checksums alongside."""
        ocp = _ocp()
        saved = to_saved(state)
        record = {"config": config_to_dict(self.config), "step": int(step), "checksums": checksums(saved), **meta}
        with _quiet_orbax():
            self._manager.save(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardSave(saved), meta=ocp.args.JsonSave(record)), force=True)
            self._manager.wait_until_finished()

    def restore(self, step: int, template_state: Any) -> tuple[Any, dict[str, Any]]:
        """Read checkpoint `step` into the structure (and sharding) of template_state.

        Raises CheckpointError with the reason when the checkpoint is unreadable, damaged (checksum) or belongs to
        another setup; nothing on disk is changed either way.
        """
        ocp = _ocp()
        where = self.directory / str(step)
        try:
            with _quiet_orbax():
                meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as error:  # orbax raises many types for damaged files
            raise CheckpointError(f"checkpoint {where}: unreadable metadata ({_first_line(error)}); nothing was "
                                  "changed") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {where}: damaged metadata; nothing was changed")
        self.check_compatible(meta.get("config", {}), where)
        template = jax.tree.map(_abstract, to_saved(template_state))
        try:
            with _quiet_orbax():
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(template))).state
        except Exception as error:
            raise CheckpointError(f"checkpoint {where}: unreadable state ({_first_line(error)}); nothing was "
                                  "changed") from None
        mismatched = [jax.tree_util.keystr(path) for path, got, want in _paired_leaves(restored, template)
                      if tuple(np.shape(got)) != tuple(want.shape) or got.dtype != want.dtype]
        if mismatched:
            raise CheckpointError(f"checkpoint {where}: arrays {mismatched[:5]} do not match this run's shapes; it "
                                  "belongs to another setup")
        if meta.get("checksums") != checksums(restored):
            raise CheckpointError(f"checkpoint {where}: damaged (its arrays do not match their checksums); nothing "
                                  "was changed")
        return from_saved(restored), meta

    def restore_latest(self, template_state: Any) -> Restored:
        """The newest checkpoint that restores and verifies; CheckpointError listing why each one failed."""
        skipped, skipped_steps = [], []
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, template_state)
            except CheckpointError as error:
                if "another setup" in str(error):
                    raise
                skipped.append(str(error))
                skipped_steps.append(step)
                continue
            return Restored(state, step, meta, skipped, skipped_steps)
        if not skipped:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        raise CheckpointError("; ".join(skipped))

    def set_aside(self, step: int) -> Path:
        """Rename damaged checkpoint `step` to damaged-<step>-<time> (kept for inspection, no longer a checkpoint),
        so that a resumed run can write that step again. Returns the new path."""
        import time

        source = self.directory / str(step)
        target = self.directory / f"damaged-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        source.rename(target)
        self.reload()
        return target

    def reload(self) -> None:
        """Re-read the checkpoint folder (after another process changed it)."""
        self._manager.reload()

    def close(self) -> None:
        """Release orbax's background resources."""
        with _quiet_orbax():
            self._manager.close()

    def check_compatible(self, saved_config: Any, where: Path) -> None:
        """CheckpointError naming the fields whose saved value differs from this run's config."""
        if not isinstance(saved_config, dict):
            raise CheckpointError(f"checkpoint {where}: damaged metadata (no config); nothing was changed")
        current = config_to_dict(self.config)
        differing = [f"{name} (saved {saved_config.get(name)!r}, now {current[name]!r})"
                     for name in IDENTITY_FIELDS if saved_config.get(name, _DEFAULTS.get(name)) != current[name]]
        if differing:
            raise CheckpointError(f"checkpoint {where}: made for another setup: {', '.join(differing)}")


_DEFAULTS = config_to_dict(PPOConfig())
"""Fields missing in checkpoints of earlier versions take their default."""


def _abstract(x: Any) -> Any:
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _paired_leaves(tree: Any, template: Any):
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    want = jax.tree.leaves(template)
    return [(path, leaf, ref) for (path, leaf), ref in zip(got, want)]
