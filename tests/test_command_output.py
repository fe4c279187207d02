"""No silent command: `jaxppo eval` says what it evaluates, how long it compiled, a line every ~5 s while a long step
runs, and its results; --quiet leaves only the final line. (`jaxppo plot`'s line: tests/test_metric_names.py.)"""

from __future__ import annotations

import re
import runpy
import sys
import threading
import time

import pytest

from jaxppo import cli, progress
from tests.helpers import TINY_FLAGS

HEARTBEAT = re.compile(r"(compiling|evaluating): \d+s so far")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["train", *TINY_FLAGS, "--total-timesteps", "128", "--seed", "3", "--out", str(out)]) == 0
    return out


def test_eval_prints_what_it_does_the_compile_seconds_then_the_results(run, capsys, monkeypatch):
    blocks = []

    class Recording(progress.Heartbeat):
        def __enter__(self):
            blocks.append(self.what)
            return super().__enter__()

    monkeypatch.setattr(progress, "Heartbeat", Recording)
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--num-episodes", "2"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    lines = [line for line in printed if not HEARTBEAT.fullmatch(line)]  # on a busy machine, steps last > 5 s
    assert lines[0] == f"evaluating {run}: 1 seed(s) x 2 episode(s) of CartPole-v1, greedy actions"
    assert lines[1] == "compiling the evaluation program for 1 seed(s) ..."
    assert re.fullmatch(r"compiled in \d+\.\ds( \(from the compilation cache\))?", lines[2]), lines[2]
    assert re.fullmatch(r"seed 3: return [\d.]+ \+- [\d.]+, length [\d.]+ \+- [\d.]+ over 2 episode\(s\)", lines[3])
    assert re.fullmatch(rf"done: mean return [\d.]+ over 1 seed\(s\) x 2 episode\(s\) \(compile \d+\.\ds, "
                        rf"evaluation \d+\.\ds\) -> {re.escape(str(run))}/eval.json", lines[-1]), lines[-1]
    assert blocks == ["compiling", "evaluating"]  # both long steps print while they run

    assert cli.main(["eval", str(run), "--num-episodes", "2", "--overwrite", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("done: mean return"), lines  # no heartbeat either


def test_heartbeat_prints_while_a_long_step_runs_and_stops_with_it():
    lines = []

    class Stream:
        def write(self, text):
            if text.strip():
                lines.append(text.strip())

        def flush(self):
            pass

    two_lines = threading.Event()
    give_up = time.monotonic() + 60
    with progress.Heartbeat("compiling", interval=0.01, stream=Stream()) as beat:
        while beat.lines_printed < 2 and time.monotonic() < give_up:  # the block runs until two lines came
            two_lines.wait(0.01)
    printed = len(lines)
    assert printed >= 2 and all(HEARTBEAT.fullmatch(line) for line in lines), lines
    two_lines.wait(0.05)
    assert len(lines) == printed  # nothing after the block


def test_a_quiet_heartbeat_prints_nothing():
    with progress.Heartbeat("evaluating", interval=0.001, enabled=False) as beat:
        threading.Event().wait(0.05)
    assert beat.lines_printed == 0


def test_python_dash_m_runs_the_console_script(monkeypatch, capsys):
    import jaxppo

    monkeypatch.setattr(sys, "argv", ["python -m jaxppo.cli", "--version"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("jaxppo.cli", run_name="__main__")
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"jaxppo {jaxppo.__version__}\n"
