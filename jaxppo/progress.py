"""Progress lines on the host: for runs whose metrics arrive through `jax.debug.callback` (ProgressPrinter, what
`make_train(progress_fn=...)` users get), for runs cut into compiled chunks (ChunkProgress, what `jaxppo train`
prints), and for one long step that reports nothing itself, such as a compilation (Heartbeat)."""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, TextIO

import numpy as np


def format_duration(seconds: float) -> str:
    """Compact h/m/s rendering, e.g. 75 -> '1m15s'."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressPrinter:
    """Prints one compact line per reported update, at most every `min_interval` seconds (and always the last).

    Called from inside the compiled run once per seed for every reported update (from the first device only);
    calls are gathered until all `calls_per_update` of an update arrived, then the seed mean is reported. The rate
    and ETA count from the first report, so compilation is excluded. Returns are NaN until an episode has ended:
    the line then says 'return --'. `steps_per_update` counts one seed's env steps per update.
    """

    def __init__(self, num_updates: int, steps_per_update: int, num_seeds: int = 1, min_interval: float = 0.5,
                 stream: TextIO | None = None):
        self.num_updates = num_updates
        self.num_seeds = num_seeds
        self.steps_per_update = steps_per_update
        self.min_interval = min_interval
        self.stream = stream if stream is not None else sys.stdout
        self._pending: dict[int, list[float]] = {}
        self._start: float | None = None
        self._start_update = 0
        self._last_print = -float("inf")
        self.lines_printed = 0

    def __call__(self, payload: dict[str, np.ndarray]) -> None:
        update = int(payload["update"])
        returns = np.ravel(np.asarray(payload["episode_return"], np.float64))
        gathered = self._pending.setdefault(update, [])
        gathered.extend(returns.tolist())
        if len(gathered) < self.num_seeds:
            return
        del self._pending[update]
        now = time.perf_counter()
        if self._start is None:
            self._start, self._start_update = now, update
        final = update >= self.num_updates
        if not final and now - self._last_print < self.min_interval:
            return
        self._last_print = now
        finite = [r for r in gathered if math.isfinite(r)]
        self._print(update, float(np.mean(finite)) if finite else None, now)

    def _print(self, update: int, mean_return: float | None, now: float) -> None:
        elapsed = now - (self._start or now)
        done_since_start = update - self._start_update
        steps_since_start = done_since_start * self.steps_per_update * self.num_seeds
        rate = steps_since_start / elapsed if elapsed > 0 and done_since_start > 0 else None
        eta = (self.num_updates - update) * self.steps_per_update * self.num_seeds / rate if rate else None
        parts = [
            f"update {update}/{self.num_updates}",
            f"env steps {update * self.steps_per_update:,}",
            f"return {mean_return:.2f}" if mean_return is not None else "return --",
            f"{rate:,.0f} steps/s" if rate else "-- steps/s",
            f"ETA {format_duration(eta)}" if eta is not None else "ETA --",
        ]
        print(" | ".join(parts), file=self.stream, flush=True)
        self.lines_printed += 1


class ChunkProgress:
    """Progress lines of a run cut into compiled chunks, printed on the host after each chunk (no callback inside
    the compiled program, so the program can be served from the persistent compilation cache).

    One definition of speed everywhere (progress lines, the `done:` line, summary.json's steps_per_second): env
    steps of every member per second of *training*, i.e. of the compiled chunks' execution, without compilation,
    evaluation or checkpoints. The ETA is wall time: it counts from the first report with everything the run does
    between chunks (evaluations, checkpoints, files), so it does not jump after the first evaluation.
    """

    def __init__(self, num_updates: int, steps_per_update: int, num_members: int = 1, stream: TextIO | None = None):
        self.num_updates, self.steps_per_update, self.num_members = num_updates, steps_per_update, num_members
        self.stream = stream if stream is not None else sys.stdout
        self._first: tuple[int, float] | None = None
        self.lines_printed = 0

    def report(self, update: int, returns: np.ndarray, train_seconds: float, updates_timed: int) -> None:
        """After a chunk: update reached, every member's last episode return [S] (NaN: none ended yet), the
        training seconds and the number of updates they cover (this call's chunks)."""
        now = time.perf_counter()
        if self._first is None:
            self._first = (update - updates_timed, now - train_seconds)
        finite = [float(r) for r in np.ravel(returns) if math.isfinite(r)]
        rate = updates_timed * self.steps_per_update * self.num_members / train_seconds if train_seconds > 0 else None
        first_update, start = self._first
        wall_per_update = (now - start) / max(update - first_update, 1)
        eta = (self.num_updates - update) * wall_per_update
        parts = [
            f"update {update}/{self.num_updates}",
            f"env steps {update * self.steps_per_update:,}",
            f"return {np.mean(finite):.2f}" if finite else "return --",
            f"{rate:,.0f} steps/s" if rate else "-- steps/s",
            f"ETA {format_duration(eta)}",
        ]
        print(" | ".join(parts), file=self.stream, flush=True)
        self.lines_printed += 1


class Heartbeat:
    """While the block runs, prints `<what>: <elapsed> so far` every `interval` seconds (from a daemon thread), so a
    long compilation or compiled call is never silent; a block shorter than `interval` prints nothing.

        with Heartbeat("evaluating"):
            result = jax.block_until_ready(evaluate(params, key))
    """

    def __init__(self, what: str, interval: float = 5.0, stream: TextIO | None = None, enabled: bool = True):
        self.what = what
        self.interval = interval
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.lines_printed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self, start: float) -> None:
        while not self._stop.wait(self.interval):
            print(f"{self.what}: {format_duration(time.perf_counter() - start)} so far", file=self.stream, flush=True)
            self.lines_printed += 1

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self._thread = threading.Thread(target=self._beat, args=(time.perf_counter(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
