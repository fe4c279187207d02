"""The rules of a run folder: one kind of run per folder, one writer at a time, no links where the run writes,
nothing removed before every check has passed, and nothing removed that jaxppo did not write.

    with claim_run_folder(out, kind="train", overwrite=False) as folder:   # checks, lock, then (maybe) removal
        ...                                                                # the run writes its files

A folder's kind ("train" or "sweep") is recorded in run.json. The lock is `out/.lock`, held with an OS file lock
(fcntl.flock) for the writer's life and removed at its end: a second writer is refused with the holder's pid, host
and command, and a lock left by a dead process is free again (the OS releases it with the process).

--overwrite replaces only a jaxppo run's outputs: a folder without run.json is refused, `/` and the home folder are
refused, and inside checkpoints/ and tb/ only what jaxppo writes there is removed (update-numbered checkpoints,
set-aside damaged ones, orbax's temporary folders, tb/seed_N). A sweep's old results stay until the new ones are
written: `staged_overwrite` trains the new sweep in out/.sweep-new and swaps it in only once it has finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from jaxppo import outputs

LOCK = ".lock"
STAGING = ".sweep-new"
"""Where `jaxppo sweep --overwrite` trains while the folder's earlier results stay (staged_overwrite)."""
KINDS = ("train", "sweep")
OUTPUTS = {
    "train": (outputs.SUMMARY, outputs.METRICS, outputs.CONFIG, outputs.RUN, outputs.PARAMS,
              outputs.PARAMS + ".sha256", outputs.EVAL_CSV, outputs.EVAL_JSON, outputs.TENSORBOARD,
              outputs.CHECKPOINTS, outputs.HPARAMS_CSV, outputs.LINEAGE_CSV, outputs.SWEEP_CSV, outputs.SWEEP_PNG,
              STAGING),
    "sweep": (outputs.SWEEP_CSV, outputs.SWEEP_PNG, outputs.CONFIG, outputs.RUN),
}
"""What each kind of run writes into its folder (W&B offline runs under wandb/ and files of your own are kept)."""
MANAGED_FOLDERS = {outputs.CHECKPOINTS: re.compile(r"^(\d+|damaged-\d+-\d{8}-\d{6}|\d+\.orbax-checkpoint-tmp.*)$"),
                   outputs.TENSORBOARD: re.compile(r"^seed_\d+$")}
"""The entries jaxppo writes inside its folders: only these are removed by --overwrite (the folder itself only once
empty); anything else in there is the user's."""


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
    # config.json and run.json say nothing on their own; sweep.csv alone is an earlier version's sweep (a sweep is
    # now a training run whose members are settings x seeds, and writes a training run's files too)
    shared = set(OUTPUTS["train"]) & set(OUTPUTS["sweep"])
    if (out / outputs.SWEEP_CSV).exists() and not any((out / name).exists() for name in OUTPUTS["train"]
                                                       if name not in shared):
        return "sweep"
    if any((out / name).exists() for name in OUTPUTS["train"] if name not in shared):
        return "train"
    return None


def _recorded_kind(out: Path) -> str | None:
    """The kind run.json records (None without a readable run.json)."""
    try:
        kind = json.loads((Path(out) / outputs.RUN).read_text()).get("kind", "train")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in KINDS else None


def existing_outputs(out: Path, kind: str) -> list[str]:
    return [name for name in OUTPUTS[kind] if os.path.lexists(Path(out) / name)]


def check_no_links(out: Path, kind: str) -> None:
    """RunFolderError if the folder, any path the run manages in it, or anything inside the folders it manages
    (checkpoints/, tb/) is a symbolic link: jaxppo writes and deletes there."""
    out = Path(out)
    if out.is_symlink():
        raise RunFolderError(f"--out {out}: is a symbolic link; give the real folder")
    links = [name for name in OUTPUTS[kind] + (LOCK,) if (out / name).is_symlink()]
    for folder in MANAGED_FOLDERS:
        if folder in OUTPUTS[kind] and (out / folder).is_dir() and not (out / folder).is_symlink():
            for root, dirs, files in os.walk(out / folder):
                for name in dirs + files:
                    if os.path.islink(os.path.join(root, name)):
                        links.append(os.path.relpath(os.path.join(root, name), out))
                dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    if links:
        raise RunFolderError(f"--out {out}: {', '.join(links[:3])} is a symbolic link; jaxppo writes and deletes there, "
                             "so it refuses links in a run folder (replace them with real files or folders)")


def holds_run(out: Path, kind: str = "train") -> bool:
    """Whether out holds a started run of `kind`: its run.json (of that kind) and config.json both exist."""
    out = Path(out)
    return folder_kind(out) == kind and (out / outputs.RUN).is_file() and (out / outputs.CONFIG).is_file()


def check_writable(out: Path) -> None:
    """RunFolderError unless out is (or can be created as) a writable folder; nothing is created."""
    out = Path(out)
    if str(out).strip() == "":
        raise RunFolderError("--out '': give a folder name, e.g. --out runs/cartpole")
    resolved = out.absolute().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise RunFolderError(f"--out {out}: is {resolved}, not a run folder; give a folder of its own, e.g. --out "
                             "runs/cartpole")
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


def check_new_run(out: Path, kind: str, overwrite: bool, replaceable: tuple[str, ...] = ()) -> list[str]:
    """All checks before a new run of `kind` starts in out; returns what --overwrite will remove (nothing yet).

    replaceable: outputs that may be replaced without --overwrite (`--resume auto` restarting a run that was stopped
    before it trained: its config.json / run.json)."""
    check_writable(out)
    if not Path(out).exists():
        return []
    check_no_links(out, kind)
    other = folder_kind(out)
    if other is not None and other != kind:
        raise RunFolderError(f"--out {out}: holds a {other} run; a {kind} run needs its own folder (choose another "
                             "--out)")
    existing = existing_outputs(out, kind)
    if set(existing) <= set(replaceable):
        return existing
    if existing and not overwrite:
        raise RunFolderError(f"--out {out}: already holds a run ({', '.join(existing)}); choose another --out or "
                             "pass --overwrite")
    if existing and _recorded_kind(Path(out)) != kind:
        raise RunFolderError(f"--out {out}: holds {', '.join(existing)} but no {outputs.RUN} naming a jaxppo {kind} "
                             "run; --overwrite only replaces a jaxppo run's outputs (move your files or choose "
                             "another --out)")
    return existing


def remove_outputs(out: Path, names: list[str]) -> None:
    """Remove a previous run's outputs (never following links: check_no_links ran before). Inside checkpoints/ and
    tb/ only the entries jaxppo writes are removed, and the folder itself only if nothing else is left in it."""
    for name in names:
        path = Path(out) / name
        if name in MANAGED_FOLDERS and path.is_dir() and not path.is_symlink():
            for entry in path.iterdir():
                if MANAGED_FOLDERS[name].match(entry.name):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty: files of the user's own stay, with their folder
        elif path.is_dir() and not path.is_symlink():
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
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise RunFolderError(f"{out}: cannot create its lock file {LOCK} ({error.strerror}); jaxppo needs a "
                                 "writable run folder (copy the run to a writable place)") from None
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
def claim_run_folder(out: Path, kind: str, overwrite: bool, replaceable: tuple[str, ...] = ()) -> Iterator[Path]:
    """Check, lock, then clear out for a new run of `kind` (see the module docstring); yields the folder."""
    out = Path(out)
    check_new_run(out, kind, overwrite, replaceable)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        existing = check_new_run(out, kind, overwrite, replaceable)  # again, now that no other writer can change it
        remove_outputs(out, existing)
        if existing and set(existing) - set(replaceable):
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


@contextlib.contextmanager
def staged_overwrite(out: Path) -> Iterator[tuple[Path, list[str]]]:
    """For --overwrite of a folder that holds a run: lock out, yield (out/.sweep-new emptied of any earlier
    attempt, the outputs it will replace); the caller runs the new run there and calls `swap_in` once it has
    finished. Until then out's earlier outputs are untouched, so a run stopped or killed half-way loses nothing."""
    out = Path(out)
    existing = [name for name in check_new_run(out, "train", True) if name != STAGING]
    with run_lock(out):
        staging = out / STAGING
        if staging.is_symlink() or staging.is_file():
            staging.unlink()
        elif staging.is_dir():
            shutil.rmtree(staging)
        yield staging, existing


def swap_in(out: Path, staging: Path, replaced: list[str]) -> None:
    """Remove out's `replaced` outputs (as remove_outputs), move every entry of staging into out (entry by entry
    inside a managed folder that still holds files of the user's), then remove staging (its lock is gone)."""
    remove_outputs(out, replaced)
    for entry in staging.iterdir():
        if entry.name == LOCK:
            continue
        target = Path(out) / entry.name
        if target.is_dir() and entry.is_dir():
            for inner in entry.iterdir():
                os.replace(inner, target / inner.name)
            entry.rmdir()
        else:
            os.replace(entry, target)
    shutil.rmtree(staging)
