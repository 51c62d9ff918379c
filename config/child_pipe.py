"""Helper processes of the worker, spoken to through their stdin/stdout as length-prefixed pickles.

The worker moves CPU work that holds the GIL out of its own process: the ClickHouse writer
(sinks/insert_process.py) and the hits reader (processors/hits_reader.py). Both are started as
`python -m <module>` with this checkout on their path, and both exit when their stdin closes,
so a worker that dies takes its helpers with it.
It sits in the leaf because both rooms start helpers, so neither imports the other for it.
"""
from __future__ import annotations

import fcntl
import io
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parent.parent
_LENGTH = struct.Struct("<Q")
PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process (/proc/sys/fs/pipe-max-size)


def start_child(module: str) -> subprocess.Popen:
    """`python -m module` with pipes on stdin and stdout (stderr is the worker's, for its log lines)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=str(ROOT), env=env)
    widen(proc.stdin)
    widen(proc.stdout)
    return proc


def widen(stream: BinaryIO) -> None:
    """Give the pipe 1 MiB instead of 64 KiB. A batch is megabytes, and a thread writing it had to win
    the GIL back from the processing thread after every 64 KiB (each time up to the 5 ms switch
    interval): fewer, larger writes."""
    try:
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):  # not Linux, or a lower limit: the default pipe still works
        pass


def send(stream: BinaryIO, obj: Any) -> None:
    buf = io.BytesIO()
    buf.write(_LENGTH.pack(0))
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: messages hold no cycles, and memoizing every value was half the cost
    pickler.dump(obj)
    view = buf.getbuffer()
    view[:_LENGTH.size] = _LENGTH.pack(len(view) - _LENGTH.size)
    stream.write(view)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """The next message; EOFError when the other side closed the pipe."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("the other side closed the pipe")
    (n,) = _LENGTH.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("the other side closed the pipe mid-message")
    return pickle.loads(data)
