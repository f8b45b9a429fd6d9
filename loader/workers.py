"""Worker processes for the loader, from any entry point.

multiprocessing's pools (and concurrent.futures' ProcessPoolExecutor on them) start a worker
by re-running the caller's __main__ module in it: a script without an
`if __name__ == "__main__":` guard starts a load in every worker, and a program read from
stdin (`python -`) cannot be re-run at all. Here a fork server of our own is started with
subprocess (fork and exec: safe in a process running threads, e.g. TensorFlow's) as a plain
Python process that runs nothing of the caller: it imports the workers' modules once, then
forks a worker on each request, which costs a fork instead of an interpreter and its imports
(uproot alone takes most of a second). Each worker is fed through its own socket, so that the
tasks of a file go to the worker that has it open (one TTree parse per file and worker, not
per task). A worker that dies is reported with its exit signal or status and the last lines
it wrote.

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
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import reduction
from pathlib import Path
from typing import Any

from loader.ntuples import OPEN_FILES

_START = "import sys; from loader.workers import serve_forks; serve_forks(int(sys.argv[1]))"
Connection = multiprocessing.connection.Connection


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


class ForkServer:
    """The process the workers are forked from; it answers "spawn", "status" and "exit"."""

    def __init__(self) -> None:
        environment = dict(os.environ)
        # The caller's import path, so that the workers find every module a call refers to.
        paths = [os.path.abspath(p or os.curdir) for p in sys.path if os.path.isdir(p or os.curdir)]
        environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        ours, theirs = socket.socketpair()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by close())
        self.process = subprocess.Popen(
            [sys.executable, "-c", _START, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            env=environment,
            start_new_session=True,  # a Ctrl-C in the terminal is for the caller alone
        )
        theirs.close()
        self.control = Connection(ours.detach())
        self.lock = threading.Lock()  # one request at a time

    def spawn(self) -> tuple[int, str, Connection]:
        """A new worker: (its pid, the file of its output, the connection to it)."""
        with self.lock:
            try:
                self.control.send(("spawn",))
                pid, log = self.control.recv()
                return pid, log, Connection(reduction.recv_handle(self.control))
            except (EOFError, OSError):
                raise RuntimeError(f"the loader's fork server {self._ended()}") from None

    def exit_status(self, pid: int, timeout: float = 5.0) -> int | None:
        """A worker's exit status (negative: the signal that killed it); None if still alive."""
        with self.lock:
            try:
                self.control.send(("status", pid, timeout))
                return self.control.recv()
            except (EOFError, OSError):
                return None

    def _ended(self) -> str:
        status = self.process.poll()
        self.log.seek(0)
        return describe_status(status) + last_output(self.log.read().decode(errors="replace"))

    def close(self) -> None:
        with contextlib.suppress(OSError), self.lock:
            self.control.send(("exit",))
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.control.close()
        self.log.close()


def last_output(text: str, lines: int = 12) -> str:
    """ "; its last output: ..." with the last lines a process wrote, or "" when it wrote none."""
    words = text.strip().splitlines()[-lines:]
    return ("; its last output:\n  " + "\n  ".join(words)) if words else ""


def describe_status(status: int | None) -> str:
    if status is None:
        return "stopped answering"
    if status < 0:
        name = signal.Signals(-status).name
        why = " (the kernel's out-of-memory killer sends SIGKILL; `dmesg` says whether it did)"
        return f"was killed by {name}" + (why if name == "SIGKILL" else "")
    return f"exited with status {status}"


@dataclass(eq=False)
class Worker:
    pid: int
    connection: Connection
    files: list[str] = dataclasses.field(default_factory=list)  # open there, oldest first
    log: str = ""  # the file its stdout and stderr go to
    server: ForkServer | None = None

    def send(self, index: int, call: Call) -> None:
        self.connection.send((index, call.function, call.args))
        if call.file in self.files:
            self.files.remove(call.file)
        self.files = [*self.files, call.file][-OPEN_FILES:]

    def death(self, call: Call | None) -> RuntimeError:
        """Why it died, as far as can be known: exit signal or status, its last words."""
        status = self.server.exit_status(self.pid) if self.server is not None else None
        try:
            said = last_output(Path(self.log).read_text(errors="replace"))
        except OSError:
            said = ""
        where = f" while reading {call.file}" if call is not None else " while starting"
        return RuntimeError(f"worker process {self.pid}{where} {describe_status(status)}{said}")


class WorkerPool:
    """`size` worker processes, started in the background: until the first is up, run() runs
    the calls in this process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.server: ForkServer | None = None
        self.ready: list[Worker] = []
        self.closing = False
        self.start_error: BaseException | None = None
        threading.Thread(target=self._start, name="loader-workers", daemon=True).start()

    def _start(self) -> None:
        try:
            server = ForkServer()
            with self.lock:
                if self.closing:  # the load finished before the server was up
                    server.close()
                    return
                self.server = server
            for _ in range(self.size):
                pid, log, connection = server.spawn()
                worker = Worker(pid, connection, log=log, server=server)
                try:
                    up = connection.poll(120) and connection.recv() == "ready"
                except (EOFError, OSError):
                    up = False
                with self.lock:
                    if self.closing:
                        connection.close()  # it sees the end of its socket and exits
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
            workers, server = list(self.ready), self.server
        for worker in workers:
            if wait:
                with contextlib.suppress(OSError):
                    worker.connection.send(None)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.connection.close()
        if server is not None:
            server.close()  # waits for its workers, removes their output files

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


# --- the fork server and the workers, in their own processes -----------------------------------


def serve_forks(descriptor: int) -> None:
    """The fork server: import the calls' modules once, then fork a worker on each "spawn"
    (single-threaded here, so fork is safe), report exit statuses, reap the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = Connection(descriptor)
    # The calls' modules: imported once here, in every worker without a cost.
    import loader.decode  # noqa: F401
    import loader.scan  # noqa: F401

    children: dict[int, str] = {}  # pid -> the file of its output
    try:
        while True:
            message = control.recv()
            if message[0] == "spawn":
                _fork_worker(control, children)
            elif message[0] == "status":
                control.send(_wait_for(message[1], message[2]))
            else:
                break
    except EOFError:  # the caller is gone
        pass
    for pid, log in list(children.items()):
        _wait_for(pid, 30.0)
        Path(log).unlink(missing_ok=True)


def _fork_worker(control: Connection, children: dict[int, str]) -> None:
    ours, theirs = socket.socketpair()
    handle, log = tempfile.mkstemp(prefix="loader-worker-", suffix=".log")
    pid = os.fork()
    if pid == 0:  # the worker
        status = 0
        try:
            control.close()
            ours.close()
            os.dup2(handle, 1)
            os.dup2(handle, 2)
            serve(theirs.detach())
        except BaseException:
            status = 1
            traceback.print_exc()  # into its output file: Worker.death shows the last lines
        finally:
            os._exit(status)
    os.close(handle)
    theirs.close()
    children[pid] = log
    control.send((pid, log))
    reduction.send_handle(control, ours.fileno(), os.getppid())
    ours.close()


def _wait_for(pid: int, timeout: float) -> int | None:
    """The exit status of a worker within timeout (negative: killed by that signal)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def serve(descriptor: int) -> None:
    """A worker: run the calls the caller sends, until it sends None or goes away."""
    from loader.decode import forget_process_state

    connection = Connection(descriptor)
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
        forget_process_state()
        sys.stdout.flush()
        sys.stderr.flush()
