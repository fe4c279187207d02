"""Every file a run writes and reads back: config.json, run.json, metrics.csv, summary.json, final parameters,
eval.csv / eval.json, sweep.csv. (`jaxppo.loading` turns a finished run's files into policies.)

Writes never follow a link planted in the run folder: whole files are written to a fresh temporary file created
exclusively (O_EXCL | O_NOFOLLOW) in the destination folder, flushed, then renamed over the target, which replaces a
link rather than writing through it. Files that are appended to (metrics.csv, eval.csv) are opened with
O_NOFOLLOW. Parameters carry a SHA-256 checksum and the digest of the config they were trained with, both verified before the
file is parsed. A write that fails (disk full, read-only folder, file size limit) is one WriteError naming the file.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import io
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from jaxppo.config import LAYOUT, PPOConfig, fields_with

FINAL_WINDOW = 10
"""final_return averages the episode return over this many last updates (fewer if the run is shorter)."""

CONFIG, RUN, METRICS, SUMMARY, PARAMS = "config.json", "run.json", "metrics.csv", "summary.json", "final_params.msgpack"
EVAL_CSV, EVAL_JSON, SWEEP_CSV, SWEEP_PNG = "eval.csv", "eval.json", "sweep.csv", "sweep.png"
HPARAMS_CSV, LINEAGE_CSV = "hparams.csv", "lineage.csv"  # population runs (jaxppo.population)
CHECKPOINTS, TENSORBOARD = "checkpoints", "tb"
RETIRED_CONFIG_FIELDS = {"parallel"}
"""Fields of configs written by earlier versions that are read and ignored (jax.pmap is no longer offered)."""


class OutputError(ValueError):
    """A run file that is missing, damaged or of another kind; the message names the file and the problem."""


class WriteError(OutputError):
    """A run file that could not be written (disk full, read-only, size limit); names the file and the reason."""


def _write_error(path: Path, error: OSError) -> WriteError:
    return WriteError(f"cannot write {path}: {error.strerror or type(error).__name__}; free space or choose "
                      "another folder (the run's earlier files are intact)")


# ------------------------------------------------------------------------------------------------- safe io
def write_bytes(path: Path, data: bytes) -> None:
    """Replace path with data atomically, never writing through a link (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, error) from None
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
    """Append text (never through a link: OSError ELOOP); a failed write is a WriteError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise
        raise _write_error(Path(path), error) from None
    try:
        with os.fdopen(fd, "a", newline="") as handle:
            handle.write(text)
            handle.flush()
    except OSError as error:
        raise _write_error(Path(path), error) from None


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
    columns.update((name, np.asarray(leaf)) for name, leaf in _metric_leaves(metrics))
    return columns


def metric_names(metrics: Any) -> list[str]:
    """The column names metrics_columns gives, for metrics of any leaves (e.g. jax.eval_shape's)."""
    return ["env_steps"] + [name for name, _ in _metric_leaves(metrics)]


def _metric_leaves(metrics: Any) -> list[tuple[str, Any]]:
    leaves: list[tuple[str, Any]] = []
    for f in dataclasses.fields(metrics):
        value = getattr(metrics, f.name)
        if f.name in ("update", "steps_per_update") or value is None:
            continue
        if f.name == "loss":
            import jax

            for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
                leaves.append((leaf_name(path), leaf))
        else:
            leaves.append((f.name, value))
    names = ["env_steps"] + [name for name, _ in leaves]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"loss metric {clashes[0]!r} collides with another metric column")
    return leaves


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
    """metrics.csv -> {column: array [S, U]} (rows in any order; an unterminated last row is ignored). Columns whose
    every value is an integer come back as int64 (so rewriting them gives the same bytes), the others as float64.

    OutputError naming the file when it is missing, empty, not numeric, has holes, a repeated column or row, or
    (with max_updates) rows beyond the run's length.
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
    repeated = sorted({n for n in names if names.count(n) > 1} | ({"seed", "update"} & set(names)))
    if repeated:
        raise OutputError(f"{path} has the column {repeated[0]!r} twice; it is damaged")
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
    if len(set(keys)) != len(keys):
        seed, update = next(k for k, count in _counts(keys).items() if count > 1)
        raise OutputError(f"{path} holds the row of seed {seed}, update {update} twice; it is damaged")
    if len(keys) != len(seeds) * num_updates:  # checked before allocating [seeds x updates]
        raise OutputError(f"{path} misses rows for some seed and update; it is damaged")
    seed_index = {s: i for i, s in enumerate(seeds)}
    order = np.asarray([seed_index[s] * num_updates + u - 1 for s, u in keys])
    columns = {}
    for index, name in enumerate(names):
        cells = [r[2 + index] for r in rows[1:]]
        if all(_is_int_text(c) for c in cells):
            column = np.zeros(len(seeds) * num_updates, np.int64)
            column[order] = [int(c) for c in cells]
        else:
            column = np.zeros(len(seeds) * num_updates, np.float64)
            column[order] = values[:, index]
        columns[name] = column.reshape(len(seeds), num_updates)
    return columns


def check_metrics_columns(path: Path, columns: dict[str, np.ndarray], names: list[str], num_seeds: int) -> None:
    """OutputError unless metrics.csv's columns are exactly `names` (in order) for num_seeds seeds (a resumed run
    appends to it and rewrites it at the end: a renamed, extra or missing column would fail only then)."""
    if list(columns) != list(names):
        extra, missing = sorted(set(columns) - set(names)), sorted(set(names) - set(columns))
        detail = (f"unexpected {extra}" if extra else "") + ("; " if extra and missing else "") + (
            f"missing {missing}" if missing else "") or "columns out of order"
        raise OutputError(f"{path} does not have this run's metric columns ({detail}); it is damaged or from "
                          "another run")
    seeds = next(iter(columns.values())).shape[0]
    if seeds != num_seeds:
        raise OutputError(f"{path} holds {seeds} seed(s), the run has {num_seeds}; it is damaged or from another run")


def _counts(items: list) -> dict:
    counts: dict = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _is_int_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


# --------------------------------------------------------------------------------------------- parameters
def params_bytes(params: Any, normalizers: Any) -> bytes:
    from flax import serialization

    return serialization.to_bytes({"params": params, "normalizers": normalizers})


LAYOUT_FIELDS = fields_with(PPOConfig, LAYOUT)
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


def verified_params_bytes(path: str | Path, config: PPOConfig | None = None) -> bytes:
    """The bytes of a write_params file, returned only once they match the sidecar's checksum and (with config)
    config is the one they were trained with: nothing is parsed before. OutputError naming the file otherwise."""
    path = Path(path)
    sidecar = Path(str(path) + ".sha256")
    try:
        data = path.read_bytes()
        digests = sidecar.read_text().split()
    except FileNotFoundError as error:
        raise OutputError(f"{error.filename} is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise OutputError(f"{sidecar if isinstance(error, UnicodeDecodeError) else error.filename} is not readable "
                          f"({type(error).__name__})") from None
    if not digests or not all(_is_sha256(d) for d in digests) or len(digests) > 2:
        raise OutputError(f"{sidecar} is damaged (expected the file's SHA-256 and its config's)")
    if sha256(data) != digests[0]:
        raise OutputError(f"{path} does not match its checksum: the file is damaged or was edited")
    if config is not None:
        if len(digests) < 2:
            raise OutputError(f"{sidecar} has no config digest, so {path.parent / CONFIG} cannot be checked against "
                              "the config these parameters were trained with")
        if config_digest(config) != digests[1]:
            raise OutputError(f"{path.parent / CONFIG} is not the config these parameters were trained with (edited "
                              "after training?)")
    return data


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def read_params(path: str | Path, template: dict[str, Any], config: PPOConfig | None = None) -> dict[str, Any]:
    """Read write_params output into the structure of template {'params': ..., 'normalizers': ...}; OutputError
    when the checksum does not match (a damaged or edited file), the config differs from the one trained with,
    or the structure differs. Verified before parsed (verified_params_bytes)."""
    from flax import serialization

    data = verified_params_bytes(path, config)
    try:
        return serialization.from_bytes(template, data)
    except Exception as error:  # noqa: BLE001 - msgpack and flax raise many types for bytes of another structure
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


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a non-finite summary value is written as null."""
    return float(value) if math.isfinite(value) else None
