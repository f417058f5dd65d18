"""The one progress display of long work (training steps, evaluation and attribution batches): a bar on
a terminal (tqdm, when installed), plain lines on stderr otherwise (CI logs, pipes); both say how long
it has run and about how long is left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


class Progress:
    """`update(done, text)` after each unit of `total`; `close()` at the end (or use `with`). `done`:
    units finished before this display began (a resumed run), which do not count towards its speed."""

    def __init__(
        self, total: int, unit: str, label: str = "", *, done: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total = total
        self.unit = unit
        self.label = label
        self._clock = clock
        self._start, self._start_done = clock(), done
        self._bar: Any = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, initial=done, unit=unit, desc=label or None, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, done: int, text: str = "") -> None:
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix_str(text, refresh=True)
            return
        head = f"{self.label} " if self.label else ""
        tail = f" | {text}" if text else ""
        print(f"{head}{self.unit} {done}/{self.total}{tail} | {self.timing(done)}", file=sys.stderr, flush=True)

    def timing(self, done: int) -> str:
        """The time taken and, at this display's speed so far, the time left: "1:05 elapsed, ~2:10 left"."""
        elapsed = self._clock() - self._start
        text = f"{_clock_time(elapsed)} elapsed"
        if done >= self.total:
            return text
        if done > self._start_done:
            left = elapsed / (done - self._start_done) * (self.total - done)
            return f"{text}, ~{_clock_time(left)} left"
        return f"{text}, time left not known yet"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clock_time(seconds: float) -> str:
    """65 -> "1:05", 3725 -> "1:02:05"."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
