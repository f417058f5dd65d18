"""Streaming and cancelling a local `model.generate`: text pieces as tokens arrive, and a flag that stops
generation at the next token. Used by `TransformersBackend.astream` / `agenerate`; torch and transformers
are imported only by the functions that need them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


class TextStream:
    """The text of one sequence as its tokens arrive. `push(token)` returns the text that is now safe to
    show: an unfinished UTF-8 character and a tail that may be the start of a stop string are held back,
    and nothing after a stop string or an end token is ever returned. The final text comes from the
    whole sequence (`TransformersBackend._to_generation`); what was returned is always a prefix of it."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] | None, end_ids: set[int]) -> None:
        self._decode = decode
        self._stop = list(stop or [])
        self._end_ids = end_ids
        self._ids: list[int] = []
        self._prefix = 0  # tokens before this one are decoded into self.text for good
        self._read = 0
        self.text = ""
        self.sent = 0
        self.done = False

    def push(self, token: int) -> str:
        if self.done:
            return ""
        if token in self._end_ids:
            self.done = True
            return ""
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.text += now[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        cut = min((i for i in (self.text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.done = True
            safe = cut
        else:
            hold = max((k for s in self._stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
            safe = len(self.text) - hold
        piece = self.text[self.sent : safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return piece


def token_streamer(rows: int, on_piece: Callable[[int, str], object], make_stream: Callable[[], TextStream]) -> Any:
    """A transformers streamer for a batch of `rows` sequences: calls `on_piece(row, text)` for new text."""
    from transformers.generation.streamers import BaseStreamer

    class _Streamer(BaseStreamer):
        def __init__(self) -> None:
            self.streams = [make_stream() for _ in range(rows)]
            self.prompt_seen = False

        def put(self, value) -> None:
            if not self.prompt_seen:  # the first call hands over the prompt ids
                self.prompt_seen = True
                return
            for row, token in enumerate(value.reshape(-1).tolist()):
                piece = self.streams[row].push(token)
                if piece:
                    on_piece(row, piece)

        def end(self) -> None:
            pass

    return _Streamer()


def cancel_criterion(cancel: threading.Event) -> Any:
    """A transformers stopping criterion that ends every sequence once `cancel` is set (checked between
    tokens, so generation stops within one token of the flag)."""
    import torch
    from transformers import StoppingCriteria

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return _Cancelled()
