"""The rules of a run folder: one kind of run per folder, one writer at a time, no links where the run writes, and
nothing removed before every check has passed.

    with claim_run_folder(out, kind="train", overwrite=False) as folder:   # checks, lock, then (maybe) removal
        ...                                                                # the run writes its files

A folder's kind ("train" or "sweep") is recorded in run.json. The lock is `out/.lock`, held with an OS file lock
(fcntl.flock) for the writer's life and removed at its end: a second writer is refused with the holder's pid, host
and command, and a lock left by a dead process is free again (the OS releases it with the process).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from jaxppo import outputs

LOCK = ".lock"
KINDS = ("train", "sweep")
OUTPUTS = {
    "train": (outputs.SUMMARY, outputs.METRICS, outputs.CONFIG, outputs.RUN, outputs.PARAMS,
              outputs.PARAMS + ".sha256", outputs.EVAL_CSV, outputs.EVAL_JSON, outputs.TENSORBOARD,
              outputs.CHECKPOINTS),
    "sweep": (outputs.SWEEP_CSV, outputs.SWEEP_PNG, outputs.CONFIG, outputs.RUN),
}
"""What each kind of run writes into its folder (W&B offline runs under wandb/ and files of your own are kept)."""


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message names the folder, the problem and the fix."""


def folder_kind(out: Path) -> str | None:
    """'train' or 'sweep' for a folder holding a run (from run.json, or guessed from its files), else None."""
    out = Path(out)
    try:
        kind = json.loads((out / outputs.RUN).read_text()).get("kind")
        if kind in KINDS:
            return kind
    except (OSError, ValueError, AttributeError):
        pass
    if (out / outputs.SWEEP_CSV).exists():
        return "sweep"
    shared = set(OUTPUTS["train"]) & set(OUTPUTS["sweep"])  # config.json, run.json say nothing on their own
    if any((out / name).exists() for name in OUTPUTS["train"] if name not in shared):
        return "train"
    return None


def existing_outputs(out: Path, kind: str) -> list[str]:
    return [name for name in OUTPUTS[kind] if os.path.lexists(Path(out) / name)]


def check_no_links(out: Path, kind: str) -> None:
    """RunFolderError if the folder or any path the run manages in it is a symbolic link."""
    out = Path(out)
    if out.is_symlink():
        raise RunFolderError(f"--out {out}: is a symbolic link; give the real folder")
    links = [name for name in OUTPUTS[kind] + (LOCK,) if (out / name).is_symlink()]
    if links:
        raise RunFolderError(f"--out {out}: {', '.join(links)} is a symbolic link; jaxppo writes and deletes there, "
                             "so it refuses links in a run folder (replace them with real files or folders)")


def check_writable(out: Path) -> None:
    """RunFolderError unless out is (or can be created as) a writable folder; nothing is created."""
    out = Path(out)
    if str(out).strip() == "":
        raise RunFolderError("--out '': give a folder name, e.g. --out runs/cartpole")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: is a file, not a folder; choose another --out")
    probe = out.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not _can_create_in(probe):
        raise RunFolderError(f"--out {out}: {probe} is not a writable folder; choose another --out")


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can be created in `folder` (tried, then removed: permissions alone do not tell, e.g. /proc
    for root)."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".jaxppo-probe-", dir=folder))
        return True
    except OSError:
        return False


def check_new_run(out: Path, kind: str, overwrite: bool) -> list[str]:
    """All checks before a new run of `kind` starts in out; returns what --overwrite will remove (nothing yet)."""
    check_writable(out)
    if not Path(out).exists():
        return []
    check_no_links(out, kind)
    other = folder_kind(out)
    if other is not None and other != kind:
        raise RunFolderError(f"--out {out}: holds a {other} run; a {kind} run needs its own folder (choose another "
                             "--out)")
    existing = existing_outputs(out, kind)
    if existing and not overwrite:
        raise RunFolderError(f"--out {out}: already holds a run ({', '.join(existing)}); choose another --out or "
                             "pass --overwrite")
    return existing


def remove_outputs(out: Path, names: list[str]) -> None:
    """Remove a previous run's outputs (never following links: check_no_links ran before)."""
    for name in names:
        path = Path(out) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold out/.lock for the duration (RunFolderError naming the holder if another process holds it).

    The lock file exists only while held: it is removed (still locked) on the way out. A process that opened the
    file just before it was removed sees, once locked, that the path no longer names its file, and tries again.
    """
    import fcntl

    path = Path(out) / LOCK
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(f"--out {out}: in use by {holder}; wait for it to finish or choose another "
                                 "--out") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise RunFolderError(f"--out {out}: could not take the lock {path}; try again")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                       f"({' '.join(sys.argv[:3])})").encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def claim_run_folder(out: Path, kind: str, overwrite: bool) -> Iterator[Path]:
    """Check, lock, then clear out for a new run of `kind` (see the module docstring); yields the folder."""
    out = Path(out)
    check_new_run(out, kind, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        existing = check_new_run(out, kind, overwrite)  # again, now that no other writer can change it
        remove_outputs(out, existing)
        if existing:
            print(f"note: --overwrite removed {', '.join(existing)} from {out}", flush=True)
        yield out


@contextlib.contextmanager
def reopen_run_folder(out: Path, kind: str = "train") -> Iterator[Path]:
    """Lock an existing run folder of `kind` to continue its run (resume, eval)."""
    out = Path(out)
    if not out.is_dir():
        raise RunFolderError(f"{out}: is not a folder holding a run")
    check_no_links(out, kind)
    other = folder_kind(out)
    if other is not None and other != kind:
        raise RunFolderError(f"{out}: holds a {other} run, not a {kind} run")
    with run_lock(out):
        yield out
