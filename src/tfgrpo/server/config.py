"""The knobs of `tfgrpo serve` and its upstream spec: no web framework is imported here, so every command
can read them without loading the proxy."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.knobs import knob
from ..errors import ConfigError
from ..learn.rollout_log import RolloutLogConfig
from ..learn.rollouts import RETRIEVAL_MODES, SELECT_MODES, PromptingConfig


@dataclass(frozen=True)
class ProxyConfig(RolloutLogConfig, PromptingConfig):
    """Every knob of `tfgrpo serve` (each is a CLI flag: `shots` -> `--shots`); with the rollout log's, every
    served completion is logged with its feedback and group (`--no-rollout-log`: not)."""

    select: str = knob(
        "retrieve",
        "how examples are chosen: by relevance (retrieve) or by advantage (sample); serve defaults to retrieve, "
        "train and eval to sample",
        choices=SELECT_MODES,
    )
    retrieval_mode: str = knob(
        "lexical",
        "with --select retrieve: lexical (BM25), semantic (embeddings) or hybrid; serve defaults to lexical, "
        "train and eval to semantic",
        choices=RETRIEVAL_MODES,
    )
    min_relevance: float = knob(
        0.2,
        "leave out retrieved experiences less relevant than this (0..1: lexical, the share of the request's "
        "words, weighed by rarity, that the experience's prompt holds; semantic and hybrid, cosine similarity), "
        "so a request unlike anything learned goes up without examples (train and eval default to 0)",
        minimum=0.0,
        maximum=1.0,
    )
    placement: str = knob(
        "system", "where lessons go: the system message or before the user's text", choices=("system", "user")
    )
    group_size: int = knob(
        4,
        "G: with --reward, choices sampled per request; without, n=1 completions of one prompt whose "
        "feedback forms a group",
        minimum=2,
        maximum=64,
    )
    group_window: float = knob(86400.0, "seconds an n=1 completion may wait for the rest of its group", minimum=1)
    holdout: float = knob(
        0.0, "share of requests served without the library (online A/B: GET .../lift)", minimum=0.0, maximum=1.0
    )
    return_choice: str = knob(
        "best",
        "with --reward: return the best-scored choice or the first sampled",
        choices=("best", "first"),
        flag="--return",
    )
    lessons_every: int = knob(8, "run the lessons update after this many new groups with signal (0: never)", minimum=0)
    retries: int = knob(
        2, "times an upstream 5xx or timeout is tried again (with backoff) before a 502/504", minimum=0, maximum=10
    )
    timeout: float = knob(120.0, "seconds to wait for the upstream (connect and each read)", minimum=0.1)
    max_output_bytes: int = knob(16 * 1024 * 1024, "most bytes of one upstream answer", minimum=1024)
    seed: int | None = knob(None, "seed of the holdout draws and of example sampling")
    workers: int = knob(
        1,
        "processes serving on the one port, each with its own event loop, sampler and indexes, all on the same "
        "library; completions and feedback may go to any of them",
        minimum=1,
        maximum=256,
    )


def parse_upstream(spec: str) -> tuple[str | None, str | None]:
    """(base URL, model) of an `--upstream` spec: "openai:MODEL@URL", "openai:@URL", a bare URL, or
    "openai[:MODEL]" with $OPENAI_BASE_URL. (None, None) for "local" / "local:PATH", which the proxy
    serves itself with `serve-model` on a loopback port."""
    if spec == "local" or spec.startswith("local:"):
        return None, None
    if spec.startswith(("http://", "https://")):
        return spec, None
    kind, _, rest = spec.partition(":")
    if kind != "openai":
        raise ConfigError(f"unknown --upstream {spec!r}: use 'openai:MODEL@http://host:port/v1', a URL, or 'local'")
    model, _, given = rest.partition("@")
    url = given or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise ConfigError(
            f"--upstream {spec!r} names no URL: write openai:MODEL@http://host:port/v1 or set $OPENAI_BASE_URL"
        )
    return url, model or None


def library_name(target: str | os.PathLike) -> str:
    """The name a library is served under without --keys: an SQLite file's stem, or a `postgresql://` URL's
    schema (`?schema=NAME`), else its database's name."""
    text = str(target)
    if not text.startswith(("postgresql://", "postgres://")):
        return Path(text).stem
    base, _, query = text.partition("?")
    schema = next((v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "schema"), "")
    return schema or base.rstrip("/").rsplit("/", 1)[-1] or "library"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
