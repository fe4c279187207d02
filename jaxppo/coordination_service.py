"""JAX's coordination service in a small process of its own beside process 0, so that a killed process 0 leaves the
other processes time to end with jaxppo's one line instead of a native abort.

`jax.distributed.initialize` runs the coordination service inside process 0. When process 0 is killed, its
sockets close at once, every other process's coordination agent fails its pending `PollForError` call in the same
millisecond and aborts the process natively (an `F... client.h] Terminating process` line, a C++ stack trace,
SIGABRT), racing `jaxppo.peer_watch`, which sees the same closed connection and wants to end the process with one
line and exit code 1. A race the watch sometimes loses (it needs Python's GIL; the agent does not).

Beside process 0 the service runs here instead, started by `start_beside` as a child process: it serves the
run's processes (process 0's runtime included) at the coordinator's address, and when process 0 ends, however it
ends (normally, with an error or killed: its end closes this process's stdin), it keeps serving for
`grace_seconds` before it stops. A killed process 0 then closes only the watch's connections; the watch ends the
other processes (milliseconds) long before the service goes (seconds). The port stays taken for those seconds
after every run: `jaxppo.distributed.rendezvous` waits for it when the next run starts at once. Process 0's own
`jax.distributed.initialize` still starts JAX's in-process service, as it must for process id 0, on a loopback
port nobody connects to.

Run as `python -m jaxppo.coordination_service ADDRESS NUM_PROCESSES TIMEOUT_SECONDS GRACE_SECONDS`: it prints
`ready` (or `error <why>`) on stdout once, then waits for the end of stdin.
"""

from __future__ import annotations

import subprocess
import sys
import time

READY = "ready"
# run this file as a script without importing jaxppo (0.2 s instead of 1.7 s) and without its folder on sys.path
_RUN_THIS_FILE = "import runpy, sys; sys.path.pop(0); runpy.run_path(sys.argv.pop(1), run_name='__main__')"


def serve(address: str, num_processes: int, timeout_seconds: int, grace_seconds: float) -> int:
    """Serve JAX's coordination service at address ("[::]:PORT") until stdin ends, then grace_seconds more.
    Returns the process exit code (1 if the service could not start)."""
    try:
        from jaxlib import _jax

        service = _jax.get_distributed_runtime_service(address, num_processes, heartbeat_timeout=timeout_seconds,
                                                       shutdown_timeout=timeout_seconds)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it with context
        print(f"error {' '.join(str(error).split())}", flush=True)
        return 1
    print(READY, flush=True)
    sys.stdin.buffer.read()  # returns when process 0 ends, however it ends
    time.sleep(grace_seconds)
    service.shutdown()
    return 0


def start_beside(port: int, num_processes: int, timeout_seconds: int, grace_seconds: float) -> subprocess.Popen:
    """Start the service process for a run whose coordinator listens on port (all interfaces); return it once it
    serves. ValueError naming the port if it cannot start within timeout_seconds (e.g. the port is in use)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _RUN_THIS_FILE, __file__, f"[::]:{port}", str(num_processes), str(int(timeout_seconds)),
         str(grace_seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = _read_line(child, timeout_seconds)
    if line != READY:
        child.kill()
        child.wait()
        why = line[len("error "):] if line.startswith("error ") else "it exited without a word"
        raise ValueError(f"process 0: JAX's coordination service could not start on port {port} ({why}); is "
                         "another program using that port? Choose another --coordinator port")
    return child


def _read_line(child: subprocess.Popen, timeout_seconds: float) -> str:
    """The child's first stdout line, stripped ('' if it ends or stays silent for timeout_seconds)."""
    import threading

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_seconds)
    return lines[0].strip() if lines else ""


def main(argv: list[str] | None = None) -> int:
    address, num_processes, timeout_seconds, grace_seconds = (argv or sys.argv[1:])[:4]
    return serve(address, int(num_processes), int(timeout_seconds), float(grace_seconds))


if __name__ == "__main__":
    sys.exit(main())
