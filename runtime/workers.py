"""Worker processes of our own: messages over a pipe, each a length-prefixed pickle, read with a
deadline so that a hung worker is noticed instead of waited for.

The fuzzers and `shipei bench` run each framework in a process of its own: a crash or a hang
stays there, thread pools and process-wide flags do not leak between frameworks, and side-by-side
timings take turns instead of fighting over the cores. Only shipei's own processes are at either
end of the pipe (never a file a user gives), so pickle carries graphs and arrays as they are.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import struct
import time
from pathlib import Path
from typing import Any

#: The variable that names a folder of the parent's to a worker, for the files the worker's
#: programs need while it lives (`executable.process_folder`): a worker that the parent kills runs
#: no clean-up of its own, and the parent removes the folder when it is done.
SCRATCH_ENV = "SHIPEI_SCRATCH"


def scratch_folder() -> str | None:
    """The folder $SHIPEI_SCRATCH names, where it is one (else None: the system's temporary folder)."""
    scratch = os.environ.get(SCRATCH_ENV)
    return scratch if scratch and os.path.isdir(scratch) else None


def send(stream: io.BufferedIOBase, message: Any) -> None:
    """Write one message and flush it."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def receive(fd: int, deadline: float | None) -> Any:
    """The next message on `fd`; `TimeoutError` past `deadline` (time.monotonic()), `EOFError` when
    the other end has gone."""
    (size,) = struct.unpack("<Q", _read(fd, 8, deadline))
    return pickle.loads(_read(fd, size, deadline))


def _read(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None and not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def replies_stream() -> io.BufferedWriter:
    """In a worker: the original stdout, for replies, with stdout itself sent to stderr (the log),
    so that nothing a framework prints can corrupt a reply."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return replies


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used (Linux; else 0)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
