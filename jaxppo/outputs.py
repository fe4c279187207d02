"""Run outputs on disk: config.json, metrics.csv, summary.json and the final parameters (msgpack)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from jaxppo.config import PPOConfig

FINAL_WINDOW = 10
"""final_return averages the episode return over this many last updates (fewer if the run is shorter)."""


def config_to_dict(config: PPOConfig) -> dict[str, Any]:
    """JSON-ready dict of every config field (tuples become lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config)}


def config_from_dict(values: dict[str, Any]) -> PPOConfig:
    """Inverse of config_to_dict (validates)."""
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"config: unknown fields {unknown}; known fields are {sorted(names)}")
    fixed = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
    return PPOConfig(**fixed)


def metrics_to_columns(metrics: Any) -> dict[str, np.ndarray]:
    """Metrics pytree with leaves [S, U] (seeds, updates) -> {name: float64/int64 array [S, U]}."""
    return {f.name: np.asarray(getattr(metrics, f.name)) for f in dataclasses.fields(metrics)}


def final_returns(episode_return: np.ndarray) -> np.ndarray:
    """Per-seed mean episode return over the last FINAL_WINDOW updates. episode_return: [S, U] -> [S]."""
    window = min(FINAL_WINDOW, episode_return.shape[1])
    return episode_return[:, -window:].mean(axis=1)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, values: dict[str, Any]) -> None:
    _atomic_write(path, (json.dumps(values, indent=2, sort_keys=False) + "\n").encode())


def write_metrics_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """One row per (seed, update): seed, update (1-based), then every metric."""
    names = list(columns)
    num_seeds, num_updates = next(iter(columns.values())).shape
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seed", "update"] + names)
        for seed in range(num_seeds):
            for update in range(num_updates):
                writer.writerow([seed, update + 1] + [_csv_value(columns[n][seed, update]) for n in names])
    os.replace(tmp, path)


def append_metrics_csv(path: Path, columns: dict[str, np.ndarray], first_update: int) -> None:
    """Append the rows of one chunk (updates first_update + 1 ...), header first if the file is new; flushed.

    Rows are seed-major within the chunk; read_metrics_csv does not depend on row order.
    """
    names = list(columns)
    num_seeds, num_updates = next(iter(columns.values())).shape
    new_file = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(["seed", "update"] + names)
        for seed in range(num_seeds):
            for update in range(num_updates):
                writer.writerow([seed, first_update + update + 1] + [_csv_value(columns[n][seed, update])
                                                                     for n in names])


def read_metrics_csv(path: str | Path) -> dict[str, np.ndarray]:
    """metrics.csv -> {column: array [S, U]} (rows in any order; an unterminated last row is ignored)."""
    text = Path(path).read_text()
    if not text.endswith("\n"):  # a run killed while appending leaves an unterminated last row: ignore it
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ValueError(f"{path}: no rows")
    seeds = sorted({int(r["seed"]) for r in rows})
    num_updates = max(int(r["update"]) for r in rows)
    out = {name: np.zeros((len(seeds), num_updates)) for name in rows[0] if name not in ("seed", "update")}
    for row in rows:
        s, u = seeds.index(int(row["seed"])), int(row["update"]) - 1
        for name in out:
            out[name][s, u] = float(row[name])
    return out


def _csv_value(value: np.generic) -> str | int:
    if np.issubdtype(np.asarray(value).dtype, np.integer):
        return int(value)
    return repr(float(value))


def write_params(path: Path, params: Any, obs_moments: Any) -> None:
    """Final parameters and observation-normaliser statistics as flax msgpack (no pickling)."""
    _atomic_write(path, serialization.to_bytes({"params": params, "obs_moments": obs_moments}))


def read_params(path: str | Path, template: dict[str, Any]) -> dict[str, Any]:
    """Read write_params output into the structure of template {'params': ..., 'obs_moments': ...}."""
    with open(path, "rb") as handle:
        return serialization.from_bytes(template, handle.read())
