"""Worker processes for the loader, from any entry point.

multiprocessing's pools (and concurrent.futures' ProcessPoolExecutor on them) start a worker
by re-running the caller's __main__ module in it: a script without an
`if __name__ == "__main__":` guard starts a load in every worker, and a program read from
stdin (`python -`) cannot be re-run at all. These workers are plain Python processes started
with subprocess (fork and exec: safe in a process running threads, e.g. TensorFlow's) that
import only what the calls they receive need, from the caller's sys.path; each is fed through
its own socket, so that the tasks of a file go to the worker that has it open (one TTree parse
per file and worker, not per task). A worker that dies is reported with its exit signal or
status and the last lines it wrote.

    with WorkerPool(4) as pool:
        for index, result in pool.run([Call(function, args, file), ...]):
            value = result()  # returns, or raises the call's exception
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

OPEN_FILES = 16  # ROOT files a worker keeps open between calls (see dataset_loader)
_START = "import sys; from loader.workers import serve; serve(int(sys.argv[1]))"


@dataclass(frozen=True)
class Call:
    """A function call for a worker, and the file it reads (to send it where that is open)."""

    function: Callable
    args: tuple
    file: str


# run(calls) -> (index, result) as the calls finish, where result() returns or raises.
Runner = Callable[[list[Call]], Iterator[tuple[int, Callable[[], Any]]]]


def run_here(calls: list[Call]) -> Iterator[tuple[int, Callable[[], Any]]]:
    """Run the calls in this process, in order."""
    for index, call in enumerate(calls):
        yield index, lambda call=call: call.function(*call.args)


@dataclass(eq=False)
class Worker:
    process: subprocess.Popen
    connection: multiprocessing.connection.Connection
    files: list[str] = dataclasses.field(default_factory=list)  # open there, oldest first
    log: Any = None  # the file its stdout and stderr go to

    def send(self, index: int, call: Call) -> None:
        self.connection.send((index, call.function, call.args))
        if call.file in self.files:
            self.files.remove(call.file)
        self.files = [*self.files, call.file][-OPEN_FILES:]

    def death(self, call: Call | None) -> RuntimeError:
        """Why it died, as far as can be known: exit signal or status, its last words."""
        try:
            status = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        if status is None:
            cause = "stopped answering"
        elif status < 0:
            name = signal.Signals(-status).name
            cause = f"was killed by {name}" + (
                " (the kernel's out-of-memory killer sends SIGKILL; `dmesg` says whether it did)"
                if name == "SIGKILL"
                else ""
            )
        else:
            cause = f"exited with status {status}"
        self.log.seek(0)
        words = self.log.read().decode(errors="replace").strip().splitlines()[-12:]
        said = ("; its last output:\n  " + "\n  ".join(words)) if words else ""
        where = f" while reading {call.file}" if call is not None else " while starting"
        return RuntimeError(f"worker process {self.process.pid}{where} {cause}{said}")


class WorkerPool:
    """`size` worker processes, started in the background: until the first is up, run() runs
    the calls in this process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.starting: list[Worker] = []
        self.ready: list[Worker] = []
        self.closing = False
        self.start_error: BaseException | None = None
        threading.Thread(target=self._start, name="loader-workers", daemon=True).start()

    def _start(self) -> None:
        environment = dict(os.environ)
        # The caller's import path, so that a worker finds every module a call refers to.
        paths = [os.path.abspath(p or os.curdir) for p in sys.path if os.path.isdir(p or os.curdir)]
        environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        try:
            for _ in range(self.size):
                ours, theirs = socket.socketpair()
                log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by close())
                process = subprocess.Popen(
                    [sys.executable, "-c", _START, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=environment,
                    start_new_session=True,  # a Ctrl-C in the terminal is for the parent
                )
                theirs.close()
                worker = Worker(
                    process, multiprocessing.connection.Connection(ours.detach()), log=log
                )
                with self.lock:
                    closing = self.closing
                    if not closing:
                        self.starting.append(worker)
                if closing:  # the load finished before this one started
                    worker.connection.close()  # it sees the end of its socket and exits
                    process.wait()
                    log.close()
                    return
            for worker in list(self.starting):
                try:
                    up = worker.connection.poll(120) and worker.connection.recv() == "ready"
                except (EOFError, OSError):
                    up = False
                with self.lock:
                    if self.closing:  # the load finished without them
                        return
                    if not up:
                        raise worker.death(None)
                    self.ready.append(worker)
        except BaseException as error:  # reported by run(); this process goes on alone meanwhile
            self.start_error = error

    def run(self, calls: list[Call]) -> Iterator[tuple[int, Callable[[], Any]]]:
        pending = list(range(len(calls)))
        busy: dict[Worker, int] = {}
        while pending or busy:
            if self.start_error is not None:
                raise RuntimeError(
                    f"cannot start the loader's worker processes: {self.start_error}. Fix the "
                    "cause above, or set max_workers = 1 in config.py."
                ) from self.start_error
            with self.lock:
                workers = list(self.ready)
            for worker in workers:
                if worker not in busy and pending:
                    index = pick_call(worker, pending, calls, workers)
                    pending.remove(index)
                    try:
                        worker.send(index, calls[index])
                    except OSError:  # broken pipe: it died
                        raise worker.death(calls[index]) from None
                    busy[worker] = index
            if not workers:
                index = pending.pop(0)
                yield index, lambda call=calls[index]: call.function(*call.args)
                continue
            # Poll while workers are still starting, so that they get work as soon as they are up.
            timeout = None if len(workers) == self.size else 0.05
            ends = {worker.connection: worker for worker in busy}
            for end in multiprocessing.connection.wait(list(ends), timeout=timeout):
                worker = ends[end]
                index = busy.pop(worker)
                try:
                    _, ok, value = end.recv()
                except (EOFError, OSError):
                    raise worker.death(calls[index]) from None
                yield index, (lambda value=value: value) if ok else _raiser(value)

    def close(self, wait: bool = True) -> None:
        """Let the workers finish (wait=True) or stop them at once (after an error)."""
        with self.lock:
            self.closing = True
            workers = list(self.starting)
        for worker in workers:
            if wait:
                with contextlib.suppress(OSError):
                    worker.connection.send(None)
            else:
                worker.process.terminate()
        for worker in workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.connection.close()
            worker.log.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        self.close(wait=kind is None)


def pick_call(worker: Worker, pending: list[int], calls: list[Call], workers: list[Worker]) -> int:
    """The call to send to an idle worker: one of a file it has open; else one of a file nobody
    has open; else the last of the file with most calls left, so that two workers sharing a
    file work from both ends of it."""
    for index in pending:
        if calls[index].file in worker.files:
            return index
    taken = {file for other in workers for file in other.files}
    for index in pending:
        if calls[index].file not in taken:
            return index
    left = collections.Counter(calls[index].file for index in pending)
    busiest = max(left, key=left.__getitem__)
    return max(index for index in pending if calls[index].file == busiest)


def _raiser(error: BaseException) -> Callable[[], Any]:
    def result() -> Any:
        raise error

    return result


def serve(descriptor: int) -> None:
    """A worker process: run the calls the parent sends, until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    connection = multiprocessing.connection.Connection(descriptor)
    import dataset_loader  # the calls' module: imported once, before the first call

    connection.send("ready")
    try:
        while True:
            message = connection.recv()
            if message is None:
                break
            index, function, args = message
            try:
                reply = (index, True, function(*args))
            except Exception as err:
                reply = (index, False, err)
            try:
                connection.send(reply)
            except Exception as err:  # an unpicklable value or exception
                connection.send((index, False, RuntimeError(f"{type(err).__name__}: {err}")))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        dataset_loader.forget_open_files()
