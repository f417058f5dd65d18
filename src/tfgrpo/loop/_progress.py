"""The one progress display of long work (training steps, evaluation and attribution batches): a bar on
a terminal (tqdm, when installed), plain lines on stderr otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """`update(done, text)` after each unit of `total`; `close()` at the end (or use `with`)."""

    def __init__(self, total: int, unit: str, label: str = "") -> None:
        self.total = total
        self.unit = unit
        self.label = label
        self._bar: Any = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit=unit, desc=label or None, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, done: int, text: str = "") -> None:
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix_str(text, refresh=True)
            return
        head = f"{self.label} " if self.label else ""
        tail = f" | {text}" if text else ""
        print(f"{head}{self.unit} {done}/{self.total}{tail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
