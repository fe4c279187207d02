"""Progress lines: seed means once all seeds reported, NaN returns shown as '--', rate excluding compilation."""

from __future__ import annotations

import io

import numpy as np

from jaxppo.progress import ProgressPrinter, format_duration


def test_lines_wait_for_every_seed_and_show_their_mean():
    stream = io.StringIO()
    printer = ProgressPrinter(num_updates=4, steps_per_update=100, num_seeds=2, min_interval=0.0, stream=stream)
    printer({"update": np.int32(1), "episode_return": np.float32(np.nan)})
    assert stream.getvalue() == ""  # the second seed has not reported update 1 yet
    printer({"update": np.int32(1), "episode_return": np.float32(np.nan)})
    printer({"update": np.int32(2), "episode_return": np.float32(10.0)})
    printer({"update": np.int32(2), "episode_return": np.float32(np.nan)})
    printer({"update": np.int32(4), "episode_return": np.float32(20.0)})
    printer({"update": np.int32(4), "episode_return": np.float32(30.0)})
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("update 1/4 | env steps 100 | return -- | -- steps/s")  # no episode ended yet
    assert "return 10.00" in lines[1]  # the seed without a finished episode is left out of the mean
    assert lines[2].startswith("update 4/4 | env steps 400 | return 25.00 |") and "ETA 0s" in lines[2]
    assert printer.lines_printed == 3


def test_at_most_one_line_per_interval_but_always_the_last():
    stream = io.StringIO()
    printer = ProgressPrinter(num_updates=50, steps_per_update=10, min_interval=3600.0, stream=stream)
    for update in range(1, 51):
        printer({"update": np.int32(update), "episode_return": np.float32(update)})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("update 1/50") and lines[1].startswith("update 50/50")


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.4, 75, 3725)] == ["0s", "59s", "1m15s", "1h02m"]


def test_chunk_progress_speed_is_training_only_and_eta_is_wall_time(monkeypatch):
    import io

    from jaxppo import progress

    clock = iter([100.0, 110.0])  # two reports, 10 s of wall time apart
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    report = progress.ChunkProgress(num_updates=40, steps_per_update=100, num_members=2, stream=stream)
    # After 10 updates that trained in 2 s: 10 * 100 * 2 / 2 = 1,000 steps/s. The run started 2 s before the first
    # report, so 10 updates took 2 s of wall time: 30 left -> 6 s.
    report.report(10, np.array([5.0, np.nan]), train_seconds=2.0, updates_timed=10)
    # 10 more updates, 4 s of training in all, but 12 s of wall time since the start (an evaluation in between):
    # 20 * 100 * 2 / 4 = 1,000 steps/s; 20 left at 12 s / 20 updates -> 12 s.
    report.report(20, np.array([np.nan, np.nan]), train_seconds=4.0, updates_timed=20)
    first, second = stream.getvalue().splitlines()
    assert first == "update 10/40 | env steps 1,000 | return 5.00 | 1,000 steps/s | ETA 6s"
    assert second == "update 20/40 | env steps 2,000 | return -- | 1,000 steps/s | ETA 12s"
