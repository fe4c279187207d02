"""A watch over the processes of a multi-process run, so that a lost process ends the others with one line.

JAX's distributed runtime notices a dead peer only through missed heartbeats, and then aborts every other process
natively (SIGABRT, a C++ stack trace; jax 0.10's `initialize` passes no callback, and the runtime's own
`missed_heartbeat_callback` cannot convert its status for Python). This watch runs beside it, on plain TCP
connections that `jaxppo.distributed.rendezvous` opens at start-up: process 0 holds one connection to every other
process (a star), each side sends a heartbeat every `interval` seconds from a daemon thread, and

- a connection that closes without a goodbye (the peer was killed or crashed: its kernel closes its sockets at
  once), or stays silent for `silence_limit` seconds (a frozen process or host; chosen below JAX's heartbeat
  timeout, so the watch speaks first), makes the watcher call `on_lost` with one line naming the process;
- process 0 first forwards that news to the other processes (`lost K`), so each of them names the lost process,
  not process 0;
- `close(ok)` says goodbye: `bye` after a normal end (a process that finished, or stopped on a pre-emption signal,
  is not lost), `failed` after an error (the others then stop too instead of waiting in a collective, unless they
  close themselves within `failure_grace` seconds: then each reports its own error). An error is often the echo of
  a lost peer (a collective fails the moment the peer's sockets close, as the watch's connection does), so
  `close(ok=False)` first gives the readers `echo_grace` seconds to report a lost peer: the line then names the
  cause, not the collective that failed.

Line protocol, one ASCII line per message: `.` (heartbeat), `bye`, `failed`, `lost K REASON` (from process 0).
`on_lost` runs on a watch thread while the main thread may be blocked in a collective that will never complete,
so it is expected to end the process (the CLI prints the line and calls `os._exit(1)`); a checkpoint being written
then stays incomplete, and orbax never takes an incomplete checkpoint as the resume point.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

HEARTBEAT = b".\n"
BYE = b"bye\n"
FAILED = b"failed\n"


class PeerWatch:
    """The watch of one process over its connections (process 0: one per other process; others: one to process 0).

    close(ok=False) after a reported loss returns only when on_lost has returned (at most LOST_HANDLER_WAIT
    seconds), so that the failing main thread does not print over the line on_lost prints before it ends the process.

    Args:
        process_id: this process's id.
        num_processes: processes in the run.
        connections: {peer process id: connected socket}.
        silence_limit: seconds without any message after which a peer counts as lost.
        on_lost: called once with one line (e.g. "process 1 of 2 was lost: its connection closed ...").
        interval: seconds between heartbeats.
        failure_grace: seconds a peer's `failed` waits for this process's own close() before it is reported.
        echo_grace: seconds close(ok=False) waits for a reader to report a lost peer before saying `failed`.
    """

    LOST_HANDLER_WAIT = 10.0

    def __init__(self, process_id: int, num_processes: int, connections: dict[int, socket.socket],
                 silence_limit: float, on_lost: Callable[[str], None], interval: float = 1.0,
                 failure_grace: float = 2.0, echo_grace: float = 0.5):
        self.process_id = process_id
        self.num_processes = num_processes
        self.connections = dict(connections)
        self.silence_limit = float(silence_limit)
        self.on_lost = on_lost
        self.interval = float(interval)
        self.failure_grace = float(failure_grace)
        self.echo_grace = float(echo_grace)
        self._done = threading.Event()
        self._lost_reported = threading.Event()
        self._lost_handled = threading.Event()  # on_lost returned (the default ends the process and never returns)
        self._lost_once = threading.Lock()
        self._send_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> "PeerWatch":
        """Start the heartbeat thread and one reader thread per connection (daemon threads)."""
        for peer, conn in self.connections.items():
            conn.settimeout(self.silence_limit)
            self._threads.append(threading.Thread(target=self._read, args=(peer, conn), daemon=True,
                                                  name=f"jaxppo-peer-watch-{peer}"))
        self._threads.append(threading.Thread(target=self._beat, daemon=True, name="jaxppo-peer-heartbeat"))
        for thread in self._threads:
            thread.start()
        return self

    def close(self, ok: bool = True) -> None:
        """Stop watching and say goodbye to every peer still connected: `bye` (ok) or `failed`."""
        if not ok and self._lost_reported.wait(0.0 if self._done.is_set() else self.echo_grace):
            # a reader found a lost peer: that report is this process's end (on_lost usually ends the process); the
            # error path that called close must not go on (print a traceback over the line) while on_lost runs
            self._lost_handled.wait(self.LOST_HANDLER_WAIT)
            return
        if self._done.is_set():
            return
        self._done.set()
        self._send_all(BYE if ok else FAILED)
        for conn in self.connections.values():
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes this side's reader, and the peer sees the end after the message
            except OSError:
                pass
            conn.close()

    def _send_all(self, message: bytes, skip: int | None = None) -> None:
        with self._send_lock:
            for peer, conn in self.connections.items():
                if peer == skip:
                    continue
                try:
                    conn.sendall(message)
                except OSError:
                    pass  # that peer's reader reports it

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            self._send_all(HEARTBEAT)

    def _read(self, peer: int, conn: socket.socket) -> None:
        buffer = b""
        while not self._done.is_set():
            try:
                chunk = conn.recv(4096)
            except socket.timeout:
                self._lost(peer, f"it sent nothing for {self.silence_limit:g}s (frozen, or its host is unreachable)")
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._lost(peer, "its connection closed without a goodbye (killed or crashed)")
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line == BYE.strip():
                    return  # that peer ended normally: nothing more to watch on this connection
                if line == FAILED.strip():
                    # Often this process is failing for the same reason at the same moment (e.g. settings that
                    # differ between processes): its own close() within the grace period lets it say why itself.
                    if not self._done.wait(self.failure_grace):
                        self._lost(peer, "it stopped with an error (see its output)")
                    return
                if line.startswith(b"lost "):  # process 0 names another lost process
                    words = line.decode(errors="replace").split(" ", 2)
                    other = int(words[1]) if len(words) > 1 and words[1].isdigit() else peer
                    self._lost(other, words[2] if len(words) > 2 else "lost")
                    return

    def _lost(self, peer: int, reason: str) -> None:
        if self._done.is_set() or not self._lost_once.acquire(blocking=False):
            return
        if self.process_id == 0:  # tell the others which process it was before this one goes
            self._send_all(f"lost {peer} {reason}\n".encode(), skip=peer)
        self._done.set()
        self._lost_reported.set()
        who = "process 0 (the coordinator)" if peer == 0 else f"process {peer}"
        try:
            self.on_lost(f"{who} of {self.num_processes} was lost: {reason}")
        finally:
            self._lost_handled.set()


def exit_on_lost(description: str, advice: str = "") -> None:
    """Print `jaxppo: error: <description>; this process stops too[; advice]` and end the process with exit code 1
    at once (called from a watch thread: the main thread may be blocked in a collective that never completes)."""
    import os
    import sys

    try:
        sys.stdout.flush()
        sys.stderr.write(f"jaxppo: error: {description}; this process stops too{'; ' + advice if advice else ''}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)
