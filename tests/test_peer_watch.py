"""PeerWatch on in-process socket pairs: a peer that vanishes, says goodbye, fails, or falls silent, and process 0
forwarding the news (no JAX; the multi-process kill is in tests/test_distributed.py, marked slow)."""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest

from jaxppo.peer_watch import PeerWatch


def _watch(process_id, num_processes, connections, silence_limit=5.0, failure_grace=0.2):
    lost: queue.Queue[str] = queue.Queue()
    watch = PeerWatch(process_id, num_processes, connections, silence_limit, lost.put, interval=0.05,
                      failure_grace=failure_grace).start()
    return watch, lost


def _lines(conn: socket.socket, count: int, timeout: float = 5.0) -> list[str]:
    """The first `count` non-heartbeat lines conn receives."""
    conn.settimeout(timeout)
    lines, buffer = [], b""
    while len(lines) < count:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line != b".":
                lines.append(line.decode())
    return lines


def test_a_peer_killed_without_a_goodbye_is_named_at_once():
    mine, theirs = socket.socketpair()
    watch, lost = _watch(0, 2, {1: mine})
    theirs.close()  # what the kernel does for a killed process
    assert lost.get(timeout=5) == ("process 1 of 2 was lost: its connection closed without a goodbye (killed or "
                                   "crashed)")
    watch.close()


def test_the_coordinator_lost_is_named_as_such():
    mine, theirs = socket.socketpair()
    watch, lost = _watch(1, 3, {0: mine})
    theirs.close()
    assert lost.get(timeout=5).startswith("process 0 (the coordinator) of 3 was lost: its connection closed")
    watch.close()


def test_a_goodbye_is_not_a_loss_and_a_failure_is():
    (a, a_peer), (b, b_peer) = socket.socketpair(), socket.socketpair()
    watch, lost = _watch(0, 3, {1: a, 2: b})
    a_peer.sendall(b".\n.\nbye\n")
    a_peer.close()
    time.sleep(0.3)
    assert lost.empty()
    b_peer.sendall(b"failed\n")
    assert lost.get(timeout=5) == "process 2 of 3 was lost: it stopped with an error (see its output)"
    watch.close()


def test_a_peer_failure_is_not_reported_when_this_process_fails_too_within_the_grace():
    # Both processes fail at once (e.g. settings that differ): each says its own error, not "process K failed".
    mine, theirs = socket.socketpair()
    watch, lost = _watch(1, 2, {0: mine}, failure_grace=1.0)
    theirs.sendall(b"failed\n")
    time.sleep(0.2)
    watch.close(ok=False)  # this process's own error path
    with pytest.raises(queue.Empty):
        lost.get(timeout=1.5)


def test_an_error_that_echoes_a_lost_peer_is_reported_as_the_lost_peer():
    # Process 0 is killed: this process's collective fails at the same moment as the watch's connection closes, and
    # its error path (close(ok=False)) must not silence the watch's report of the cause.
    mine, theirs = socket.socketpair()
    watch, lost = _watch(1, 2, {0: mine})
    threading.Timer(0.05, theirs.close).start()
    watch.close(ok=False)
    assert lost.get(timeout=2).startswith("process 0 (the coordinator) of 2 was lost: its connection closed")


def test_process_0_forwards_the_lost_process_to_the_others_who_name_it():
    (to_1, at_1), (to_2, at_2) = socket.socketpair(), socket.socketpair()
    watch, lost = _watch(0, 3, {1: to_1, 2: to_2})
    at_1.close()
    assert lost.get(timeout=5).startswith("process 1 of 3 was lost")
    forwarded = _lines(at_2, 1)[0]
    assert forwarded.startswith("lost 1 its connection closed")
    # ... and process 2's own watch turns that line into its report naming process 1, not process 0
    mine, theirs = socket.socketpair()
    other, other_lost = _watch(2, 3, {0: mine})
    theirs.sendall((forwarded + "\n").encode())
    assert other_lost.get(timeout=5) == ("process 1 of 3 was lost: its connection closed without a goodbye (killed "
                                         "or crashed)")
    watch.close()
    other.close()


def test_silence_past_the_limit_is_a_loss_and_heartbeats_keep_a_peer_alive():
    (quiet, quiet_peer), (beating, beating_peer) = socket.socketpair(), socket.socketpair()
    watch, lost = _watch(0, 3, {1: quiet, 2: beating}, silence_limit=0.6)
    peer_watch, peer_lost = _watch(2, 3, {0: beating_peer}, silence_limit=0.6)  # sends heartbeats to process 0
    assert lost.get(timeout=5) == ("process 1 of 3 was lost: it sent nothing for 0.6s (frozen, or its host is "
                                   "unreachable)")
    with pytest.raises(queue.Empty):
        lost.get(timeout=0.8)  # process 2 keeps beating
    peer_watch.close()
    watch.close()
    quiet_peer.close()


def test_close_says_goodbye_or_failed_once():
    mine, theirs = socket.socketpair()
    watch, lost = _watch(1, 2, {0: mine})
    watch.close(ok=False)
    watch.close(ok=True)  # no second message
    assert _lines(theirs, 2, timeout=1.0) == ["failed"]
    assert lost.empty()


def test_the_error_path_waits_for_the_lost_peer_report_to_finish():
    # the main thread's error (a collective failing because the peer died) must not go on to print its traceback
    # while on_lost is still printing its line and ending the process
    events: list[str] = []
    reporting = threading.Event()

    def slow_on_lost(line: str) -> None:
        reporting.set()
        time.sleep(0.5)
        events.append("reported")

    mine, theirs = socket.socketpair()
    watch = PeerWatch(1, 2, {0: mine}, 5.0, slow_on_lost, interval=0.05).start()
    theirs.close()
    assert reporting.wait(5)
    watch.close(ok=False)
    events.append("error path goes on")
    assert events == ["reported", "error path goes on"]
