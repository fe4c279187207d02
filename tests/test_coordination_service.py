"""JAX's coordination service in a process beside process 0 (jaxppo.coordination_service): it outlives a killed
process 0 by its grace, a taken port is a one-line error, and the next run waits for the port (rendezvous). The
multi-process kill itself is in tests/test_distributed.py (marked slow)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from jaxppo import coordination_service
from jaxppo.distributed import _listen
from tests import helpers


def _served(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_the_service_outlives_a_killed_process_0_by_its_grace():
    port, grace = helpers.free_port(), 2.0
    process_0 = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from jaxppo import coordination_service as c; "
         f"c.start_beside({port}, 2, 30, {grace}); print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process_0.stdout.readline().strip() == "up"
        assert _served(port)
        process_0.send_signal(signal.SIGKILL)
        process_0.wait()
        killed_at = time.monotonic()
        assert _served(port), "the service ended with process 0"
        while _served(port) and time.monotonic() - killed_at < grace + 10:
            time.sleep(0.1)
        gone_after = time.monotonic() - killed_at
    finally:
        process_0.kill()
    assert grace - 0.5 < gone_after < grace + 5, gone_after


def test_a_taken_port_is_a_one_line_error_naming_it():
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"could not start on port {port} .*Choose another --coordinator port"):
            coordination_service.start_beside(port, 2, 30, 1.0)


def test_process_0_waits_for_the_port_the_previous_run_still_holds():
    held = socket.create_server(("", 0))
    port = held.getsockname()[1]
    threading.Timer(1.0, held.close).start()
    start = time.monotonic()
    with _listen(port, until=start + 5):
        assert time.monotonic() - start > 0.8
    with socket.create_server(("", port)), pytest.raises(ValueError, match=f"cannot listen on port {port}"):
        _listen(port, until=time.monotonic() + 0.5)
