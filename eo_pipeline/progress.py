# SPDX-License-Identifier: Apache-2.0
"""Telling the user where a long run is: a progress line, collapsed warnings, a closing summary.

Used by the command line only; the library itself never prints. The progress line is
drawn on a terminal only (never into a log file or a pipe), at most ten times a
second, and erased before anything else is printed.
"""

from __future__ import annotations

import re
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["ProgressLine", "task_progress", "WarningCollapser", "peak_memory_mb"]

#: Task-name prefixes of the writers' last step, and how many output files each finishes.
OUTPUT_TASKS = {"_finish": 1, "_draw": 1, "_write_hotspots_task": 2, "_table_task": 1}


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children, MB (Linux: ru_maxrss in kB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1.0 / 1024.0 if sys.platform != "darwin" else 1.0 / 2**20
    return max(own, children) * scale


class ProgressLine:
    """One self-overwriting status line on a terminal; does nothing elsewhere.

    Parameters
    ----------
    stream : text stream
        Where to draw (standard error).
    enabled : bool
        False (not a terminal, or ``-q``) makes every method a no-op.
    """

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._last = 0.0
        self._width = 0
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def show(self, text: str, *, force: bool = False) -> None:
        """Draw ``text`` (throttled to 10 per second unless ``force``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < 0.1:
                return
            self._last = now
            line = f"eo-pipeline: {text} [{now - self.t0:.0f} s]"
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self._width = len(line)

    def clear(self) -> None:
        """Erase the line (before printing anything else)."""
        if not self.enabled or not self._width:
            return
        with self._lock:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def task_progress(line: ProgressLine, n_outputs: int) -> Any:
    """A dask callback (context manager) counting tasks done and output files finished on ``line``."""
    from dask.callbacks import Callback

    class TaskProgress(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.total = 0
            self.done = 0
            self.written = 0

        def _start_state(self, dsk: Any, state: Any) -> None:
            self.total += sum(len(state[k]) for k in ("ready", "waiting", "running", "finished") if k in state)

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            self.done += 1
            name = key[0] if isinstance(key, tuple) else key
            if isinstance(name, str):
                self.written += next((n for prefix, n in OUTPUT_TASKS.items() if name.startswith(prefix + "-")), 0)
            pct = 100.0 * self.done / self.total if self.total else 100.0
            line.show(f"[{'#' * int(pct / 5):<20}] {pct:3.0f} % of {self.total} tasks, "
                      f"{min(self.written, n_outputs)}/{n_outputs} outputs written")

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            line.clear()

    return TaskProgress()


_PATH_PREFIX = re.compile(r"^(?P<path>\S+\.(?:nc4?|he5|h5|tif{1,2}|gpkg|geojson|ya?ml|csv)): ")


class WarningCollapser:
    """``warnings.showwarning`` replacement: the first of each kind in full, repeats counted.

    Two warnings are of one kind when their category and their text after a leading
    ``<file>: `` are equal (the readers name the file first). :meth:`report` prints one
    line per kind that repeated, with the count and the first file.
    """

    def __init__(self, emit: Callable[[str], None], before: Callable[[], None] = lambda: None) -> None:
        self.emit = emit
        self.before = before
        self.seen: dict[tuple[type, str], list[Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        text = str(message)
        m = _PATH_PREFIX.match(text)
        kind = (category, text[m.end():] if m else text)
        with self._lock:
            entry = self.seen.get(kind)
            if entry is not None:
                entry[1] += 1
                return
            self.seen[kind] = [m.group("path") if m else None, 1]
        self.before()
        self.emit(f"eo-pipeline: warning: {text}")

    def report(self) -> None:
        """One line per kind that repeated: how many files (or times), the first file, the text."""
        for (_, rest), (first, count) in self.seen.items():
            if count > 1:
                what = f"for {count} files (the first: {first})" if first else f"{count} times"
                short = rest if len(rest) <= 140 else rest[:137] + "..."
                self.emit(f"eo-pipeline: warning: the same warning came {what}: {short}")
