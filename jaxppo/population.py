"""The members of a run and their files: seeds x hyperparameter settings (a sweep) or a PBT population.

Every run trains a population of members in one vmapped program (TrainState with a leading member axis). A plain
training run's members are its seeds, all with the config's hyperparameters; a sweep's are settings x seeds
(setting-major: member m is setting m // S with seed seed + m % S, so a sweep row is reproducible as a single
run); a PBT run's are N seeds whose hyperparameters are drawn from the explored ranges (or the config's) and then
evolve (jaxppo.pbt). Member indices are metrics.csv's `seed` column and `jaxppo.load(run, seed=m)`'s index.

Files: hparams.csv (update, member, one column per varied hyperparameter: the starting values at update 0 and,
with PBT, every member's values after each exploit/explore step) and lineage.csv (PBT: update, member, parent,
their fitness; one row per replaced member).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxppo import outputs
from jaxppo.config import HParams, stack_hparams
from jaxppo.pbt import ExploreRange, PBTConfig, PopulationRecord, sample_hparams

HPARAMS_CSV, LINEAGE_CSV = outputs.HPARAMS_CSV, outputs.LINEAGE_CSV


@dataclasses.dataclass(frozen=True)
class Population:
    """What varies between the members of a run (besides the seed)."""

    settings: tuple[tuple[tuple[str, float], ...], ...] = ()
    """Sweep settings: each a tuple of (hyperparameter, value) overrides; () trains the config's values."""
    pbt: PBTConfig | None = None
    """Population-based training (members = pbt.population seeds; settings must be empty)."""

    def num_members(self, num_seeds: int) -> int:
        if self.pbt is not None:
            return self.pbt.population
        return max(1, len(self.settings)) * num_seeds

    def member_seeds(self, seed: int, num_seeds: int) -> list[int]:
        """The training seed of every member (see the module docstring)."""
        if self.pbt is not None:
            return list(range(seed, seed + self.pbt.population))
        return [seed + m % num_seeds for m in range(self.num_members(num_seeds))]

    def varied(self) -> tuple[str, ...]:
        """Names of the hyperparameters that differ between members (hparams.csv's columns)."""
        if self.pbt is not None:
            return tuple(item.name for item in self.pbt.explore)
        names: list[str] = []
        for setting in self.settings:
            names += [name for name, _ in setting if name not in names]
        return tuple(names)

    def member_hparams(self, base: HParams, num_seeds: int) -> HParams:
        """HParams [N] of every member at the start."""
        n = self.num_members(num_seeds)
        if self.pbt is not None:
            stacked = stack_hparams([base] * n)
            if self.pbt.initial == "config":
                return stacked
            return sample_hparams(stacked, self.pbt, jax.random.fold_in(jax.random.key(self.pbt.seed), 2**31 - 1))
        settings = self.settings or ((),)
        return stack_hparams([base.replace(**dict(setting)) for setting in settings for _ in range(num_seeds)])

    def validate(self, hparam_names: tuple[str, ...], num_seeds: int) -> None:
        """ValueError naming the problem (an unknown name, a PBT run with settings or with several seeds)."""
        if self.pbt is not None:
            self.pbt.validate(hparam_names)
            if self.settings:
                raise ValueError("a PBT run explores ranges; it takes no sweep settings")
            if num_seeds != 1:
                raise ValueError(f"num_seeds={num_seeds}: a PBT run's members are its seeds (set --population)")
        for setting in self.settings:
            for name, value in setting:
                if name not in hparam_names:
                    raise ValueError(f"{name!r} is not a traced hyperparameter; choose from {', '.join(hparam_names)}")
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{name}={value!r}: must be a finite number")

    def to_json(self) -> dict[str, Any]:
        pbt = None
        if self.pbt is not None:
            pbt = {**dataclasses.asdict(self.pbt), "explore": [dataclasses.asdict(e) for e in self.pbt.explore]}
        return {"settings": [dict(setting) for setting in self.settings], "pbt": pbt}

    @classmethod
    def from_json(cls, values: dict[str, Any] | None) -> Population:
        if not values:
            return cls()
        pbt = values.get("pbt")
        if pbt is not None:
            pbt = PBTConfig(**{**pbt, "explore": tuple(ExploreRange(**e) for e in pbt["explore"])})
        settings = tuple(tuple((str(k), float(v)) for k, v in setting.items()) for setting in values.get("settings", []))
        return cls(settings=settings, pbt=pbt)


def hparams_rows(update: int, names: tuple[str, ...], hparams: HParams) -> np.ndarray:
    """float64 [N, 2 + H]: (update, member, values...) of every member."""
    values = np.stack([np.asarray(getattr(hparams, name), np.float64) for name in names], axis=1)
    n = values.shape[0]
    return np.concatenate([np.full((n, 1), update), np.arange(n)[:, None], values], axis=1)


def _format(rows: np.ndarray, integer_columns: int) -> str:
    lines = []
    for row in rows:
        ints = [str(int(v)) for v in row[:integer_columns]]
        lines.append(",".join(ints + [repr(float(v)) for v in row[integer_columns:]]))
    return "".join(line + "\n" for line in lines)


def append_hparams(out: Path, names: tuple[str, ...], rows: np.ndarray) -> None:
    """Append rows (hparams_rows) to hparams.csv, header first if new."""
    path = Path(out) / HPARAMS_CSV
    header = "" if path.exists() and path.stat().st_size else "update,member," + ",".join(names) + "\n"
    outputs._append_text(path, header + _format(rows, 2))


def lineage_rows(records: PopulationRecord, first: int, done: int, ready: int) -> tuple[np.ndarray, np.ndarray]:
    """(lineage rows [R, 5]: update, member, parent, fitness of member, fitness of parent; hparams rows) of the
    steps a chunk took (periods p with first + (p + 1) * ready <= done)."""
    parents, fitness, values = (np.asarray(x) for x in records)
    lineage, hparams = [], []
    for p in range(parents.shape[0]):
        update = first + (p + 1) * ready
        if update > done:
            break
        for member in np.flatnonzero(parents[p] != np.arange(parents.shape[1])):
            lineage.append([update, member, parents[p, member], fitness[p, member], fitness[p, parents[p, member]]])
        n = parents.shape[1]
        hparams.append(np.concatenate([np.full((n, 1), update), np.arange(n)[:, None], values[p]], axis=1))
    lineage = np.asarray(lineage, np.float64).reshape(-1, 5)
    hparams = np.concatenate(hparams) if hparams else np.zeros((0, 2 + values.shape[-1]))
    return lineage, hparams


def append_lineage(out: Path, rows: np.ndarray) -> None:
    path = Path(out) / LINEAGE_CSV
    header = "" if path.exists() and path.stat().st_size else "update,member,parent,member_fitness,parent_fitness\n"
    outputs._append_text(path, header + _format(rows, 3))


def trim_after(out: Path, done: int) -> None:
    """Drop rows of hparams.csv / lineage.csv written after update `done` (a resume from that checkpoint)."""
    for name in (HPARAMS_CSV, LINEAGE_CSV):
        path = Path(out) / name
        if not path.exists():
            continue
        lines = path.read_text().splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if line.strip() and int(line.split(",")[0]) <= done]
        outputs.write_bytes(path, "".join(kept).encode())


def read_hparams(out: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, rows [R, 2 + H]) of hparams.csv."""
    text = (Path(out) / HPARAMS_CSV).read_text().splitlines()
    names = tuple(text[0].split(",")[2:])
    rows = np.asarray([[float(v) for v in line.split(",")] for line in text[1:] if line.strip()], np.float64)
    return names, rows.reshape(-1, 2 + len(names))


class PopulationRecorder:
    """After-chunk hook of a PBT run: lineage.csv and hparams.csv rows of the chunk's exploit/explore steps.
    every = ready_updates, so the chunk loop ends chunks at whole periods."""

    def __init__(self, out: Path, pbt: PBTConfig, write: bool):
        self.out, self.pbt, self.write = Path(out), pbt, write
        self.every = pbt.ready_updates

    def after_chunk(self, chunk: Any) -> None:
        if not self.write or chunk.records is None:
            return
        lineage, hparams = lineage_rows(chunk.records, chunk.first, chunk.done, self.pbt.ready_updates)
        if len(hparams):
            append_hparams(self.out, tuple(item.name for item in self.pbt.explore), hparams)
        if len(lineage):
            append_lineage(self.out, lineage)

    def close(self) -> None:
        pass


def best_member(final_returns: np.ndarray) -> int | None:
    """Index of the member with the highest final return (None when none is finite)."""
    finite = np.isfinite(final_returns)
    return int(np.argmax(np.where(finite, final_returns, -np.inf))) if finite.any() else None
