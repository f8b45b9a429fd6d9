"""A quiet, useful console: library noise goes to the run's log, progress bars to a terminal only.

TensorFlow, CUDA and absl print from C++ straight to file descriptor 2 ("failed call to
cuInit", "Could not find cuda drivers", ...), where Python cannot filter them. NativeLogRouter
puts a pipe behind descriptor 2 and gives Python's sys.stderr the real terminal: the lines that
arrive on the pipe go to the run's log, and those that are not the libraries' noise (a crash
report, say) also to the terminal. Python-level library logs and warnings go to the log too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

# Lines of abseil's C++ logging ("I0000 00:00:1796010913.853361    6070 cudart_stub.cc:31] ...")
# and the other start-up lines TensorFlow prints natively.
_NATIVE_NOISE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+\s+\S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)
# Python packages whose warnings and log records belong in the log, not on the terminal.
_LIBRARIES = ("tensorflow", "keras", "tf_keras", "absl", "h5py", "google", "tf2onnx", "onnx")


class NativeLogRouter:
    """Routes what is written to descriptor 2 by native code; see the module docstring."""

    def __init__(self) -> None:
        self.terminal = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.stderr = sys.stderr
        sys.stderr = open(os.dup(self.terminal), "w", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.log: TextIO | None = None
        self.pending: list[str] = []  # lines that arrived before there was a log
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, args=(read_end,), daemon=True)
        self.reader.start()

    def _read(self, read_end: int) -> None:
        with open(read_end, encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                with self.lock:
                    if self.log is not None:
                        self.log.write(line)
                        self.log.flush()
                    elif len(self.pending) < 10_000:
                        self.pending.append(line)
                if not _NATIVE_NOISE.match(line):
                    os.write(self.terminal, line.encode())

    def set_log(self, path: Path) -> None:
        """From now on (and for what came before), write the routed lines to this file."""
        with self.lock:
            if self.log is not None:
                self.log.close()
            self.log = open(path, "a", encoding="utf-8")  # noqa: SIM115
            self.log.writelines(self.pending)
            self.log.flush()
            self.pending = []

    def close(self) -> None:
        """Give descriptor 2 back to the terminal and wait for the last routed lines."""
        sys.stderr.flush()
        os.dup2(self.terminal, 2)  # closes the pipe's write end: the reader sees its end
        self.reader.join(timeout=5)
        sys.stderr.close()
        sys.stderr = self.stderr
        with self.lock:
            if self.log is not None:
                self.log.close()
                self.log = None
        os.close(self.terminal)


_router: NativeLogRouter | None = None
_log_handler: logging.Handler | None = None


@contextlib.contextmanager
def quiet_console(debug: bool = False) -> Iterator[None]:
    """For the duration of a command: native noise and library logs and warnings kept off the
    terminal (in the run's log once log_to() names it). debug=True changes nothing."""
    global _router
    if debug:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's info lines: not even logged
    _router = NativeLogRouter()
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)  # with a root handler TensorFlow adds no stderr handler of its own
    show = warnings.showwarning
    warnings.showwarning = _show_warning(show)
    try:
        yield
    finally:
        warnings.showwarning = show
        root.removeHandler(handler)
        log_to(None)
        _router.close()
        _router = None


def log_to(path: Path | None) -> None:
    """Send the routed native lines, library log records and library warnings to this file."""
    global _log_handler
    root = logging.getLogger()
    if _log_handler is not None:
        root.removeHandler(_log_handler)
        _log_handler.close()
        _log_handler = None
    if path is None:
        return
    if _router is not None:
        _router.set_log(path)
    _log_handler = logging.FileHandler(path, encoding="utf-8")
    _log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(_log_handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def _show_warning(show: Any) -> Any:
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if any(f"{os.sep}{name}{os.sep}" in filename for name in _LIBRARIES):
            logging.getLogger("py.warnings").warning(
                "%s:%s: %s: %s", filename, lineno, category.__name__, message
            )
            return
        show(message, category, filename, lineno, file, line)

    return showwarning


# ---------------------------------------------------------------------------------------------
# Stage timings and progress
# ---------------------------------------------------------------------------------------------
class StageTimer:
    """Times the stages of a run and prints each one as it starts and ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        print(f"--- {name} done in {self.seconds[name]:.1f} s", flush=True)


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress(tqdm):
    """tqdm for a log file: a whole line at most every 30 s (and at the end), no bar redrawn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mininterval", 30.0)
        kwargs.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) "
                          "[{elapsed}<{remaining}, {rate_fmt}]")  # fmt: skip
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self.n == 0 and not self.disable:
            return True  # nothing done yet: no line
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        return True


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """A progress bar on a terminal, periodic lines in a log file; disable=True hides it."""
    file = kwargs.get("file") or sys.stderr
    if is_terminal(file):
        return tqdm(*args, **kwargs)
    return LineProgress(*args, **kwargs)
