"""Read the records of an offline W&B run file (run-*.wandb) back, to check what a test logged.

The file is W&B's record log: a 7-byte header (":W&B", magic, version), then LevelDB-log framing in 32 KiB
blocks (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) around protobuf `Record`s.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32768
HEADER = 7


def _payloads(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if pos + HEADER + length > len(data):  # a record still being written
            return
        pending += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            yield pending
            pending = b""


def _records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    records = []
    for payload in _payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def read_run(path: Path, timeout: float = 30.0) -> tuple[dict, list[dict]]:
    """({name, group, project, config}, [history rows as {key: value}]) of one offline run file.

    The file is read once it holds the run's `exit` record (waiting up to `timeout` seconds): W&B's service writes
    the records in the background. In one CI run the file read after `run.finish()` held no `run` record; records
    not yet on disk is the likely cause (inferred, not observed).
    """
    deadline = time.monotonic() + timeout
    records = _records(path)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout} s"
        time.sleep(0.1)
        records = _records(path)
    meta: dict = {}
    history: list[dict] = []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
            meta = {"name": record.run.display_name, "group": record.run.run_group, "project": record.run.project,
                    "config": config}
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return meta, history
