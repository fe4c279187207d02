"""Checkpoints of the full training state with orbax-checkpoint (`CheckpointManager`, keep-last-N).

A checkpoint holds every array of the TrainState (params, optimizer state, env states and carries, normaliser
statistics, PRNG key data, update counter, hyperparameters; a leading seed axis when several seeds train together)
plus a JSON record: the config, the run settings, a checksum of every array, and the run's identity (its config
without layout fields, first seed and number of seeds, a digest of these, and a digest of the arrays' shapes).
Before any array is read, the identity is compared with the run restoring it: a checkpoint of another run (another
lr, seed, total, number of seeds... e.g. a copied checkpoints/ folder or an edited config.json / run.json) is refused
with the fields that differ and both values. Saves are synchronous and committed atomically
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
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.config import IDENTITY, PPOConfig, fields_with
from jaxppo.outputs import LAYOUT_FIELDS, config_to_dict

T = TypeVar("T")

IDENTITY_FIELDS = fields_with(PPOConfig, IDENTITY)
"""Config fields that fix the shapes of the saved state (listed first when a checkpoint is refused)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored; the message names it and says that nothing was changed."""


class ForeignCheckpoint(CheckpointError):
    """A checkpoint of another run (its identity differs from the run restoring it): never skipped over."""


def run_identity(config: PPOConfig, seed: int, num_seeds: int) -> dict[str, Any]:
    """What makes a run that run: its config without layout fields, its first seed and its number of seeds."""
    values = {k: v for k, v in config_to_dict(config).items() if k not in LAYOUT_FIELDS}
    return {"config": values, "seed": int(seed), "num_seeds": int(num_seeds)}


def _digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def shape_digest(tree: Any) -> str:
    """Digest of the paths, shapes and dtypes of a (saved) state's arrays: layout-free (arrays are global)."""
    return _digest([(jax.tree_util.keystr(path), list(np.shape(leaf)), str(leaf.dtype))
                    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]])


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is only needed when checkpointing

    return ocp


class _Reports:
    """When the last background report a quiet window swallowed came (time.monotonic)."""

    def __init__(self):
        self.last = float("-inf")

    def note(self, _args: Any = None) -> None:
        import time

        self.last = time.monotonic()


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[_Reports]:
    """orbax logs routine events as WARNING and failures (a full disk, a damaged file) as ERROR through absl, and
    its asyncio helpers report the same failure again from their threads and event loops. The caller turns the
    failure into one line, so none of this reaches the user's terminal during our calls (`_orbax_call`)."""
    import sys
    import threading
    import warnings

    loggers = [logging.getLogger(name) for name in ("absl", "orbax", "asyncio", "jax._src.distributed")]
    levels = [logger.level for logger in loggers]
    hooks = (threading.excepthook, sys.unraisablehook)
    reports = _Reports()
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    threading.excepthook = reports.note
    sys.unraisablehook = reports.note
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
            yield reports
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        threading.excepthook, sys.unraisablehook = hooks


def _orbax_call(action: Callable[[], T], describe: Callable[[BaseException], str]) -> T:
    """action() inside a quiet window; when it fails, CheckpointError(describe(error)) once orbax's abandoned
    background work has reported and been collected, still inside the window.

    When one tensorstore write (or read) fails, orbax closes the call's event loop at once while the other operations
    of that checkpoint are still in flight; each then reports "Event loop is closed" to sys.unraisablehook as it
    finishes, and the failed asyncio tasks, kept alive by the error's traceback, log "Task exception was never
    retrieved" when collected. orbax keeps no handle on any of them, so the window drops the error, collects what it
    kept alive, and waits until no report came for `_QUIET_S` seconds (at most `_DRAIN_LIMIT_S`) before it closes."""
    import gc
    import time

    with _quiet_orbax() as reports:
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
            message = describe(error)
        start = time.monotonic()
        gc.collect()  # the error and its traceback are gone: the tasks and coroutines they held report now
        while (time.monotonic() - start < _DRAIN_LIMIT_S
               and time.monotonic() - max(reports.last, start) < _QUIET_S):
            time.sleep(0.05)
        gc.collect()
    raise CheckpointError(message)


_QUIET_S = 0.5
_DRAIN_LIMIT_S = 20.0


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

    def __init__(self, directory: Path, config: PPOConfig, max_to_keep: int = 3, seed: int = 0, num_seeds: int = 1,
                 may_differ: tuple[str, ...] = ()):
        """may_differ: config fields a checkpoint may hold another value of (an intended change, e.g.
        total_timesteps when a run is extended)."""
        ocp = _ocp()
        self.directory = Path(directory).absolute()
        self.config = config
        self.identity = run_identity(config, seed, num_seeds)
        self.may_differ = tuple(may_differ)
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
        identity = {"seed": self.identity["seed"], "num_seeds": self.identity["num_seeds"],
                    "digest": _digest(self.identity), "shapes": shape_digest(saved)}
        record = {"config": config_to_dict(self.config), "step": int(step), "checksums": checksums(saved),
                  "identity": identity, **meta}
        def write() -> None:
            self._manager.save(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardSave(saved), meta=ocp.args.JsonSave(record)), force=True)
            self._manager.wait_until_finished()

        _orbax_call(write, lambda error: f"checkpoint {self.directory / str(step)}: could not be written "
                                         f"({_short(error)})")  # a full disk or a size limit

    def restore(self, step: int, template_state: Any) -> tuple[Any, dict[str, Any]]:
        """Read checkpoint `step` into the structure (and sharding) of template_state.

        Raises CheckpointError with the reason when the checkpoint is unreadable or damaged (checksum), and
        ForeignCheckpoint when it belongs to another run (checked before any array is read); nothing on disk is
        changed either way.
        """
        ocp = _ocp()
        where = self.directory / str(step)
        meta = _orbax_call(
            lambda: self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta,
            lambda error: f"checkpoint {where}: unreadable metadata ({_first_line(error)}); nothing was changed")
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {where}: damaged metadata; nothing was changed")
        template = jax.tree.map(_abstract, to_saved(template_state))
        self.check_identity(meta, where, template)
        restored = _orbax_call(
            lambda: self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template))).state,
            lambda error: f"checkpoint {where}: unreadable state ({_first_line(error)}); nothing was changed")
        mismatched = [jax.tree_util.keystr(path) for path, got, want in _paired_leaves(restored, template)
                      if tuple(np.shape(got)) != tuple(want.shape) or got.dtype != want.dtype]
        if mismatched:
            raise ForeignCheckpoint(f"checkpoint {where}: arrays {mismatched[:5]} do not match this run's shapes; it "
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
            except ForeignCheckpoint:
                raise
            except CheckpointError as error:
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

    def check_identity(self, meta: dict[str, Any], where: Path, template: Any) -> None:
        """ForeignCheckpoint naming each field whose value in the checkpoint differs from this run's, with both
        values (config fields as in config.json, seed and num_seeds as in run.json); CheckpointError when the record
        is damaged. Checkpoints of earlier versions (no identity record) are compared on their config and options."""
        saved_config = meta.get("config")
        if not isinstance(saved_config, dict):
            raise CheckpointError(f"checkpoint {where}: damaged metadata (no config); nothing was changed")
        recorded = meta.get("identity")
        options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
        source = recorded if isinstance(recorded, dict) else options
        mine = self.identity
        theirs = {"config": {k: saved_config.get(k, _DEFAULTS.get(k)) for k in mine["config"]},
                  "seed": source.get("seed", mine["seed"] if not recorded else None),
                  "num_seeds": source.get("num_seeds", mine["num_seeds"] if not recorded else None)}
        if isinstance(recorded, dict):
            exact = {"config": {k: v for k, v in saved_config.items() if k not in LAYOUT_FIELDS},
                     "seed": recorded.get("seed"), "num_seeds": recorded.get("num_seeds")}
            if recorded.get("digest") != _digest(exact):
                raise CheckpointError(f"checkpoint {where}: damaged metadata (its identity does not match its "
                                      "digest); nothing was changed")
        order = list(IDENTITY_FIELDS) + [k for k in mine["config"] if k not in IDENTITY_FIELDS]
        differing = [f"{name} (checkpoint {theirs['config'][name]!r}, config.json {mine['config'][name]!r})"
                     for name in order if name not in self.may_differ
                     and theirs["config"][name] != mine["config"][name]]
        differing += [f"{name} (checkpoint {theirs[name]!r}, run.json {mine[name]!r})" for name in ("seed", "num_seeds")
                      if theirs[name] != mine[name]]
        if differing:
            raise ForeignCheckpoint(f"checkpoint {where} belongs to another run: {', '.join(differing)}; resume a "
                                    "run only with its own checkpoints and files (nothing was changed)")
        if isinstance(recorded, dict) and recorded.get("shapes") != shape_digest(template):
            raise ForeignCheckpoint(f"checkpoint {where}: its arrays have other shapes than this run's state (another "
                                    "version or setup); nothing was changed")


_DEFAULTS = config_to_dict(PPOConfig())
"""Fields missing in checkpoints of earlier versions take their default."""


def _abstract(x: Any) -> Any:
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _short(error: BaseException) -> str:
    """The reason of an orbax / tensorstore error without its paths and codes: e.g. 'File too large'."""
    import re

    found = re.findall(r"(No space left on device|File too large|Read-only file system|Permission denied|Disk quota "
                       r"exceeded)", str(error))
    return found[-1] if found else _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _paired_leaves(tree: Any, template: Any):
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    want = jax.tree.leaves(template)
    return [(path, leaf, ref) for (path, leaf), ref in zip(got, want)]
