"""crew.py: forked worker processes and this one taking numbered chunks of work from one pipe, results sent back."""

from __future__ import annotations

import os
import select
import signal
import struct
from collections.abc import Callable, Iterator

# By hand over os.fork and pipes, not concurrent.futures: a process pool hands each worker its next call through
# two threads of this process (its manager and queue feeder), which wait for this process's GIL while it audits
# its own chunks: a 6.1 tree's worker sat idle ~5 ms (the switch interval) at a third of its ~140 chunks.
TICKET = struct.Struct("<I")  # a chunk's number in the pipe of numbers
HEAD = struct.Struct("<IBQ")  # a worker's record: chunk number, kind (RESULT, ERROR), bytes that follow
RESULT, ERROR = 0, 1
MAX_TICKETS = (64 << 10) // TICKET.size  # numbers the pipe takes before the fork (a pipe holds 64 KiB at least)
PIPE_BYTES = 1 << 20  # asked of each result pipe (F_SETPIPE_SZ), so that a worker seldom waits for this process


class Crew:
    """`workers` forked processes and this one taking the chunk numbers 0..n-1 from one pipe, each number once
    (the pipe is written whole and closed before the fork: an empty read means none is left). A worker runs
    `setup()`, then `work(k)` -> bytes for each number k it takes, and sends (k, bytes) back through a pipe of its
    own; this process takes its own numbers (turns), reads what the workers sent so far between two of its chunks
    (poll) and the rest at the end (finish). Nothing runs in a thread here. Where os.fork is missing, this process
    takes every number."""

    def __init__(self, n: int, workers: int, work: Callable[[int], bytes], setup: Callable[[], None]) -> None:
        if n > MAX_TICKETS:
            raise ValueError(f"{n} chunks: at most {MAX_TICKETS}")
        self.n = n
        self.taken: set[int] = set()  # the numbers this process took
        self.kids: dict[int, int] = {}  # pid -> the read end of its result pipe
        self.bufs: dict[int, bytearray] = {}  # read end -> bytes read, not yet a whole record
        self.status: dict[int, int] = {}  # pid -> its wait status, once reaped
        self.tickets, w = os.pipe()
        os.write(w, b"".join(TICKET.pack(k) for k in range(n)))
        os.close(w)
        for _ in range(workers if hasattr(os, "fork") else 0):
            self._fork(work, setup)

    def _fork(self, work: Callable[[int], bytes], setup: Callable[[], None]) -> None:
        r, w = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (ImportError, AttributeError, OSError):  # not Linux, or over /proc/sys/fs/pipe-max-size: 64 KiB
            pass
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _worker(self.tickets, w, work, setup)  # never returns
        os.close(w)
        os.set_blocking(r, False)
        self.kids[pid], self.bufs[r] = r, bytearray()

    def turns(self) -> Iterator[int]:
        """The chunk numbers this process takes, one at a time, until none is left."""
        while True:
            got = os.read(self.tickets, TICKET.size)
            if len(got) < TICKET.size:
                return
            k = TICKET.unpack(got)[0]
            self.taken.add(k)
            yield k

    def poll(self) -> list[tuple[int, int, bytes]]:
        """The workers' records (chunk number, kind, bytes) that have arrived, without waiting."""
        out: list[tuple[int, int, bytes]] = []
        for fd in list(self.bufs):
            self._drain(fd, out)
        return out

    def finish(self) -> list[tuple[int, int, bytes]]:
        """The workers' remaining records, waiting for each worker to end (the end of its pipe), then reaped."""
        out: list[tuple[int, int, bytes]] = []
        while self.bufs:
            ready, _, _ = select.select(list(self.bufs), [], [])
            for fd in ready:
                self._drain(fd, out)
        self._reap()
        return out

    def _drain(self, fd: int, out: list) -> None:
        buf = self.bufs[fd]
        while True:
            try:
                got = os.read(fd, PIPE_BYTES)
            except BlockingIOError:
                break
            if not got:  # the worker ended (or died): a record it had not sent whole is lost
                os.close(fd)
                del self.bufs[fd]
                break
            buf += got
        at = 0
        while len(buf) - at >= HEAD.size:
            k, kind, size = HEAD.unpack_from(buf, at)
            if len(buf) - at - HEAD.size < size:
                break
            out.append((k, kind, bytes(buf[at + HEAD.size : at + HEAD.size + size])))
            at += HEAD.size + size
        del buf[:at]

    def lost(self, sent: set[int]) -> tuple[list[int], str]:
        """The chunk numbers neither this process took nor a worker sent back (`sent`), and why: how the workers
        ended."""
        missing = [k for k in range(self.n) if k not in self.taken and k not in sent]
        ends = sorted({_ended(s) for s in self.status.values() if s})
        return missing, "; ".join(ends) or "the worker process ended without its result"

    def close(self) -> None:
        """Stop the workers still running (Ctrl-C, an error here) and let go of the pipes."""
        for pid in self.kids:
            if pid not in self.status:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._reap()
        for fd in [*self.bufs, self.tickets]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.bufs.clear()
        self.tickets = -1

    def _reap(self) -> None:
        for pid in self.kids:
            if pid not in self.status:
                try:
                    self.status[pid] = os.waitpid(pid, 0)[1]
                except ChildProcessError:
                    self.status[pid] = 0


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _worker(tickets: int, out: int, work: Callable[[int], bytes], setup: Callable[[], None]) -> None:
    """A forked worker's life: numbers from `tickets`, records to `out`, then os._exit (never this process's exit
    handlers, buffers or the caller's frames: the fork may come from inside a test runner)."""
    code = 0
    try:
        setup()
        while True:
            got = os.read(tickets, TICKET.size)
            if len(got) < TICKET.size:
                break
            k = TICKET.unpack(got)[0]
            try:
                data, kind = work(k), RESULT
            except Exception as e:  # noqa: BLE001 - the chunk fails as one line per module; the others go on
                data, kind = f"{type(e).__name__}: {e}".encode(), ERROR
            _send(out, HEAD.pack(k, kind, len(data)) + data)
    except BaseException:  # noqa: BLE001 - its chunks not sent are reported lost, with this exit status
        code = 1
    finally:
        os._exit(code)


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
