"""Every file a run writes and reads back: config.json, run.json, metrics.csv, summary.json, final parameters,
eval.csv / eval.json, sweep.csv; and `load_run`, a trained run as a ready policy.

Writes never follow a link planted in the run folder: whole files are written to a fresh temporary file created
exclusively (O_EXCL | O_NOFOLLOW) in the destination folder, flushed, then renamed over the target, which replaces a
link rather than writing through it. Files that are appended to (metrics.csv, eval.csv) are opened with
O_NOFOLLOW. Parameters carry a SHA-256 checksum that is verified on every read.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxppo.config import PPOConfig

FINAL_WINDOW = 10
"""final_return averages the episode return over this many last updates (fewer if the run is shorter)."""

CONFIG, RUN, METRICS, SUMMARY, PARAMS = "config.json", "run.json", "metrics.csv", "summary.json", "final_params.msgpack"
EVAL_CSV, EVAL_JSON, SWEEP_CSV, SWEEP_PNG = "eval.csv", "eval.json", "sweep.csv", "sweep.png"
CHECKPOINTS, TENSORBOARD = "checkpoints", "tb"
RETIRED_CONFIG_FIELDS = {"parallel"}
"""Fields of configs written by earlier versions that are read and ignored (jax.pmap is no longer offered)."""


class OutputError(ValueError):
    """A run file that is missing, damaged or of another kind; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------------- safe io
def write_bytes(path: Path, data: bytes) -> None:
    """Replace path with data atomically, never writing through a link (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, values: Any) -> None:
    write_bytes(path, (json.dumps(values, indent=2, allow_nan=True) + "\n").encode())


def read_json(path: Path, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON object from path; OutputError naming the file when it is missing, not JSON or not an object."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise OutputError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise OutputError(f"{path} is not readable JSON ({type(error).__name__}: {error})") from None
    if not isinstance(values, dict):
        raise OutputError(f"{path} holds {type(values).__name__} {str(values)[:40]}, not {what}")
    return values


def _append_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a", newline="") as handle:
        handle.write(text)
        handle.flush()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------- config
def config_to_dict(config: PPOConfig) -> dict[str, Any]:
    """JSON-ready dict of every config field (tuples become lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config)}


def config_from_dict(values: Any) -> PPOConfig:
    """Inverse of config_to_dict (validates); ValueError naming unknown fields or the broken rule."""
    if not isinstance(values, dict):
        raise ValueError(f"config: expected a JSON object of PPOConfig fields, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    unknown = sorted(set(values) - names - RETIRED_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"config: unknown fields {unknown}; known fields are {sorted(names)}")
    fixed = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    try:
        return PPOConfig(**fixed)
    except TypeError as error:
        raise ValueError(f"config: {error}") from None


def read_config(run_dir: Path) -> PPOConfig:
    """The PPOConfig in run_dir/config.json; OutputError naming the file and the problem."""
    path = Path(run_dir) / CONFIG
    try:
        return config_from_dict(read_json(path, "a config"))
    except OutputError:
        raise
    except ValueError as error:
        raise OutputError(f"{path} is invalid: {error}") from None


# ------------------------------------------------------------------------------------------------ metrics
def metrics_columns(metrics: Any) -> dict[str, np.ndarray]:
    """Metrics (leaves [S, U]: seeds, updates) -> {column: array [S, U]}, env_steps first, then every leaf named
    by its field (nested loss metrics by their own names). None fields are left out."""
    columns: dict[str, np.ndarray] = {"env_steps": np.asarray(metrics.env_steps)}
    for f in dataclasses.fields(metrics):
        value = getattr(metrics, f.name)
        if f.name in ("update", "steps_per_update") or value is None:
            continue
        if f.name == "loss":
            import jax

            for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
                name = leaf_name(path)
                if name in columns:
                    raise ValueError(f"loss metric {name!r} collides with another metric column")
                columns[name] = np.asarray(leaf)
        else:
            columns[f.name] = np.asarray(value)
    return columns


def leaf_name(path) -> str:
    parts = [getattr(k, "name", None) or getattr(k, "key", None) or str(getattr(k, "idx", k)) for k in path]
    return "/".join(str(p) for p in parts)


def final_returns(episode_return: np.ndarray) -> np.ndarray:
    """Per-seed mean episode return over the last FINAL_WINDOW updates, NaN placeholders (no episode ended yet)
    skipped. episode_return: [S, U] -> [S] (NaN for a seed whose window holds no return at all)."""
    window = np.asarray(episode_return, np.float64)[:, -min(FINAL_WINDOW, episode_return.shape[1]):]
    counts = np.sum(np.isfinite(window), axis=1)
    sums = np.nansum(np.where(np.isfinite(window), window, np.nan), axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _csv_value(value: Any) -> str | int:
    if np.issubdtype(np.asarray(value).dtype, np.integer) or np.asarray(value).dtype == np.bool_:
        return int(value)
    return repr(float(value))


def _metrics_rows(columns: dict[str, np.ndarray], first_update: int, header: bool) -> str:
    names = list(columns)
    num_seeds, num_updates = next(iter(columns.values())).shape
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(["seed", "update"] + names)
    for seed in range(num_seeds):
        for update in range(num_updates):
            writer.writerow([seed, first_update + update + 1] + [_csv_value(columns[n][seed, update]) for n in names])
    return buffer.getvalue()


def write_metrics_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """One row per (seed, update): seed, update (1-based), then every column (NaN where no episode ended yet)."""
    write_bytes(path, _metrics_rows(columns, 0, header=True).encode())


def append_metrics_csv(path: Path, columns: dict[str, np.ndarray], first_update: int) -> None:
    """Append the rows of one chunk (updates first_update + 1 ...), header first if the file is new."""
    path = Path(path)
    new_file = not path.exists() or path.stat().st_size == 0
    _append_text(path, _metrics_rows(columns, first_update, header=new_file))


def read_metrics_csv(path: str | Path, max_updates: int | None = None) -> dict[str, np.ndarray]:
    """metrics.csv -> {column: array [S, U]} (rows in any order; an unterminated last row is ignored).

    OutputError naming the file when it is missing, empty, not numeric, has holes, or (with max_updates) rows
    beyond the run's length.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise OutputError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise OutputError(f"{path} is not readable ({type(error).__name__})") from None
    if not text.endswith("\n"):  # a run killed while appending leaves an unterminated last row: ignore it
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(text.splitlines()))
    if len(rows) < 2 or rows[0][:2] != ["seed", "update"]:
        raise OutputError(f"{path} has no metric rows (expected a header starting 'seed,update' and rows)")
    names = rows[0][2:]
    try:
        keys = [(int(r[0]), int(r[1])) for r in rows[1:]]
        values = np.array([[float(v) for v in r[2:]] for r in rows[1:]], np.float64)
    except (ValueError, IndexError):
        raise OutputError(f"{path} holds a row that is not numeric or has the wrong number of fields") from None
    if values.shape[1:] != (len(names),):
        raise OutputError(f"{path} holds rows with the wrong number of fields")
    seeds = sorted({s for s, _ in keys})
    num_updates = max(u for _, u in keys)
    limit = max_updates if max_updates is not None else 10_000_000
    if min(u for _, u in keys) < 1 or num_updates > limit or len(seeds) > 100_000:
        raise OutputError(f"{path} has update numbers outside 1..{limit} or too many seeds; it is damaged")
    out = np.full((len(names), len(seeds), num_updates), np.nan)
    seen = np.zeros((len(seeds), num_updates), bool)
    seed_index = {s: i for i, s in enumerate(seeds)}
    for (s, u), row in zip(keys, values):
        out[:, seed_index[s], u - 1] = row
        seen[seed_index[s], u - 1] = True
    if not seen.all():
        raise OutputError(f"{path} misses rows for some seed and update; it is damaged")
    return dict(zip(names, out))


# --------------------------------------------------------------------------------------------- parameters
def params_bytes(params: Any, normalizers: Any) -> bytes:
    from flax import serialization

    return serialization.to_bytes({"params": params, "normalizers": normalizers})


LAYOUT_FIELDS = ("num_devices",)
"""Config fields that choose where a run executes, not what it learns (they may change on resume)."""


def config_digest(config: PPOConfig) -> str:
    """SHA-256 of the config's canonical JSON, layout fields left out."""
    values = {k: v for k, v in config_to_dict(config).items() if k not in LAYOUT_FIELDS}
    return sha256(json.dumps(values, sort_keys=True).encode())


def write_params(path: Path, params: Any, normalizers: Any, config: PPOConfig | None = None) -> None:
    """Parameters and normaliser statistics as flax msgpack (no pickling), with a sidecar holding the SHA-256 of
    the file and of the config they were trained with."""
    data = params_bytes(params, normalizers)
    sidecar = sha256(data) + "\n" + (config_digest(config) + "\n" if config is not None else "")
    write_bytes(Path(str(path) + ".sha256"), sidecar.encode())
    write_bytes(path, data)


def read_params(path: str | Path, template: dict[str, Any], config: PPOConfig | None = None) -> dict[str, Any]:
    """Read write_params output into the structure of template {'params': ..., 'normalizers': ...}; OutputError
    when the checksum does not match (a damaged or edited file), the config differs from the one trained with,
    or the structure differs."""
    from flax import serialization

    path = Path(path)
    try:
        data = path.read_bytes()
        digests = Path(str(path) + ".sha256").read_text().split()
    except FileNotFoundError as error:
        raise OutputError(f"{error.filename} is missing") from None
    if not digests or sha256(data) != digests[0]:
        raise OutputError(f"{path} does not match its checksum: the file is damaged or was edited")
    if config is not None and len(digests) > 1 and config_digest(config) != digests[1]:
        raise OutputError(f"{path.parent / CONFIG} is not the config these parameters were trained with (edited "
                          "after training?)")
    try:
        return serialization.from_bytes(template, data)
    except (ValueError, KeyError, TypeError) as error:
        raise OutputError(f"{path} does not match the run's config ({str(error)[:200]})") from None


# ------------------------------------------------------------------------------------------ summary, eval
def write_summary(run_dir: Path, values: dict[str, Any]) -> None:
    write_json(Path(run_dir) / SUMMARY, values)


def append_eval_csv(path: Path, update: int, env_steps: int, returns: np.ndarray, lengths: np.ndarray) -> None:
    """Rows update, env_steps, seed, mean_return, std_return, mean_length for returns/lengths [S, episodes]."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not Path(path).exists():
        writer.writerow(["update", "env_steps", "seed", "mean_return", "std_return", "mean_length"])
    for seed_index in range(returns.shape[0]):
        writer.writerow([update, env_steps, seed_index, float(returns[seed_index].mean()),
                         float(returns[seed_index].std()), float(lengths[seed_index].mean())])
    _append_text(Path(path), buffer.getvalue())


def trim_eval_csv(path: Path, last_update: int) -> None:
    """Drop eval.csv rows after last_update (a resumed run re-evaluates them)."""
    path = Path(path)
    if not path.exists():
        return
    rows = list(csv.reader(path.read_text().splitlines()))
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= last_update]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(kept)
    write_bytes(path, buffer.getvalue().encode())


def write_sweep_csv(path: Path, names: list[str], rows: list[dict[str, float]], finals: np.ndarray) -> None:
    """A row per setting: its values, mean/std/min/max of the final return, and the per-seed returns (;-joined)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names + ["mean", "std", "min", "max", "returns"])
    for row, per_seed in zip(rows, finals):
        writer.writerow([repr(row[n]) for n in names] + [repr(row[k]) for k in ("mean", "std", "min", "max")]
                        + [";".join(repr(float(r)) for r in per_seed)])
    write_bytes(path, buffer.getvalue().encode())


# ----------------------------------------------------------------------------------------------- loading
class LoadedRun(NamedTuple):
    """A finished run, ready to act (see load_run)."""

    config: PPOConfig
    params: Any  # one seed's parameters
    normalizers: Any  # that seed's normaliser statistics
    act: Any  # act(obs, key=None, **kwargs) -> env actions (see make_policy; carry/first with memory)
    num_seeds: int


def read_final_params(run_dir: Path) -> tuple[PPOConfig, dict[str, Any], int]:
    """(config with num_devices=1, {'params', 'normalizers'} with leaves [S, ...], S) of a finished run folder."""
    import jax
    from flax import serialization

    from jaxppo.agent import make_agent
    from jaxppo.networks import init_params
    from jaxppo.normalizers import init_normalizers

    run_dir = Path(run_dir)
    trained = read_config(run_dir)
    config = dataclasses.replace(trained, num_devices=1)
    try:
        agent = make_agent(config)
    except ValueError as error:
        raise OutputError(f"{run_dir / CONFIG}: {error}") from None
    single = {"params": jax.eval_shape(lambda k: init_params(agent.network, agent.spec, k), jax.random.key(0)),
              "normalizers": jax.eval_shape(lambda: init_normalizers(agent.spec.obs_shape))}
    path = run_dir / PARAMS
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
    except FileNotFoundError:
        raise OutputError(f"{path} is missing; the run has not finished (jaxppo train --resume {run_dir})") from None
    except ValueError as error:
        raise OutputError(f"{path} is unreadable: {error}") from None
    first = jax.tree.leaves(raw.get("params", {})) if isinstance(raw, dict) else []
    reference = jax.tree.leaves(single["params"])
    if not first or np.ndim(first[0]) != len(reference[0].shape) + 1:
        raise OutputError(f"{path} does not hold per-seed parameters of the config in {run_dir / CONFIG}")
    num_seeds = int(np.shape(first[0])[0])
    template = jax.tree.map(lambda x: np.zeros((num_seeds,) + tuple(x.shape), x.dtype), single)
    return config, read_params(path, template, trained), num_seeds


def load_run(run_dir: str | Path, seed_index: int = 0) -> LoadedRun:
    """A trained run folder in one line: config, one seed's parameters and normaliser statistics, and act().

        run = jaxppo.load("runs/cartpole")
        action = run.act(obs)                  # greedy; run.act(obs, key) samples

    act(obs, key=None, action_mask=None, carry=None, first=None) applies the saved observation statistics; with
    memory it returns (actions, carry) like make_policy's act.
    """
    import jax

    from jaxppo.agent import make_policy

    config, saved, num_seeds = read_final_params(Path(run_dir))
    if not 0 <= seed_index < num_seeds:
        raise ValueError(f"seed_index={seed_index}: the run has {num_seeds} seed(s)")
    params = jax.tree.map(lambda x: x[seed_index], saved["params"])
    normalizers = jax.tree.map(lambda x: x[seed_index], saved["normalizers"])
    policy = make_policy(config)

    def act(obs, key=None, **kwargs):
        return policy(params, obs, key, normalizers=normalizers, **kwargs)

    return LoadedRun(config, params, normalizers, act, num_seeds)


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a non-finite summary value is written as null."""
    return float(value) if math.isfinite(value) else None
