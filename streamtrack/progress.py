"""A small progress bar for long command-line work (stderr; quiet lines when not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress("tracking", total) as bar: ... bar.update()``.

    On a terminal the bar redraws in place at most 5 times a second; otherwise a
    line is printed every 10% (or every 100 items when the total is unknown).
    ``done``: items finished before this run (a resumed job); they count towards the total
    but not towards the rate.
    """

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None, done: int = 0) -> None:
        # sys.stderr looked up now, not at import: it may have been replaced since.
        stream = sys.stderr if stream is None else stream
        self.label, self.total, self.stream = label, total, stream
        self.count = self.done = done
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._last_step = -1
        self._tty = stream.isatty()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self._draw(final=True)

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw >= 0.2:
                self._draw()
        else:
            step = self.count * 10 // self.total if self.total else self.count // 100
            if step != self._last_step:
                self._last_step = step
                self._draw()

    def _draw(self, final: bool = False) -> None:
        self._last_draw = time.monotonic()
        elapsed = self._last_draw - self.start
        rate = (self.count - self.done) / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(self.count / self.total, 1.0)
            bar = "#" * int(frac * 30)
            eta = f"{(self.total - self.count) / rate:.0f}s" if rate > 0 else "?"
            text = f"{self.label} [{bar:<30}] {self.count}/{self.total} {rate:.1f}/s eta {eta}"
        else:
            text = f"{self.label} {self.count} {rate:.1f}/s"
        if self._tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
