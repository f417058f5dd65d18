"""`multidomain`: a bundled family of small tasks, one per domain, each with an answer convention of its
own and a strict checker, for continual and multi-domain learning (`tfgrpo continual`).

Every domain asks a small thing in one request form and accepts only its own exact form of the answer:
an ISO date, a JSON object of two fields, the words in double quotes, the words in lower case, the words
joined by hyphens. Each request names its form, so a model sometimes writes it zero-shot (the bundled
SmolLM2-135M does, a few times in a hundred at temperature 0.7: enough for a library to start from), and
follows it far more often from examples of it (`docs/evidence.md`, "Continual and multi-domain", measures
both). The quote, lower-case and hyphen requests draw from one vocabulary, so a retriever by words can
confuse them. Samples are generated, deterministic for a seed, and carry their domain in
`sample["metadata"]`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from ..rewards.base import Reward, Score
from .task import Task

INSTRUCTION = "Answer the request. Reply with the answer only."

_MONTHS = ("January February March April May June July August September October November December").split()
_NAMES = "Alice Bruno Chen Dara Emil Farah Goran Hana Ivan Jonas Kira Luca Mira Nina Omar Priya".split()
_WORDS = (
    "blue river green stone quiet market bright window silver forest small garden red bridge cold morning "
    "paper lamp open road golden field"
).split()


@dataclass(frozen=True)
class Domain:
    """One domain: `make(rng)` draws (prompt, reference answer); `check(response, answer)` is its strict
    checker (whitespace around the response aside, only the convention's exact form counts)."""

    name: str
    make: Callable[[random.Random], tuple[str, str]]
    check: Callable[[str, str], bool]
    space: int
    """How many distinct prompts the domain can draw (an upper bound on a run's samples)."""


def _exact(response: str, answer: str) -> bool:
    return response.strip() == answer


def _dates(rng: random.Random) -> tuple[str, str]:
    year, month, day = rng.randint(1990, 2029), rng.randint(1, 12), rng.randint(1, 28)
    return f"Date in ISO form (YYYY-MM-DD): {_MONTHS[month - 1]} {day}, {year}", f"{year:04d}-{month:02d}-{day:02d}"


def _json(rng: random.Random) -> tuple[str, str]:
    name, age = rng.choice(_NAMES), rng.randint(18, 80)
    return f"JSON with name and age: {name} is {age} years old", json.dumps({"name": name, "age": age})


def _check_json(response: str, answer: str) -> bool:
    """The same object of the same two fields, each once, of the same JSON types (the age a whole number:
    `22.0` or `21.999999999999999` is not `22`); any spacing and either key order."""

    def once(pairs: list[tuple[str, object]]) -> dict:
        if len({key for key, _ in pairs}) < len(pairs):  # two values for one key: two answers in one
            raise ValueError("a key given twice")
        return dict(pairs)

    def typed(value: object) -> object:
        return {k: (type(v).__name__, v) for k, v in value.items()} if isinstance(value, dict) else value

    try:
        got = json.loads(response.strip(), object_pairs_hook=once, parse_float=lambda text: ("float", text))
        return typed(got) == typed(json.loads(answer))
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return False


def _quote(rng: random.Random) -> tuple[str, str]:
    words = " ".join(rng.sample(_WORDS, 2))
    return f'Repeat inside double quotes ("..."): {words}', f'"{words}"'


def _lower(rng: random.Random) -> tuple[str, str]:
    words = " ".join(rng.sample(_WORDS, 2))
    return f"Rewrite in lower case letters: {words.upper()}", words


def _hyphen(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, 2)
    return f"Join with hyphens: {' '.join(words)}", "-".join(words)


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("dates", _dates, _exact, 40 * 12 * 28),
        Domain("json", _json, _check_json, len(_NAMES) * 63),
        Domain("quote", _quote, _exact, len(_WORDS) * (len(_WORDS) - 1)),
        Domain("lower", _lower, _exact, len(_WORDS) * (len(_WORDS) - 1)),
        Domain("hyphen", _hyphen, _exact, len(_WORDS) * (len(_WORDS) - 1)),
    )
}


class DomainReward(Reward):
    """1.0 when the response passes its sample's domain checker (`sample["domain"]`), else 0.0."""

    max_workers = 1  # a string comparison: no thread pool

    def score(self, prompt: str, response: str, sample: dict) -> Score:
        domain = DOMAINS.get(str(sample.get("domain")))
        if domain is None or "answer" not in sample:
            return Score(0.0, f"no domain checker for this sample (domain {sample.get('domain')!r})")
        ok = domain.check(response, str(sample["answer"]))
        return Score(float(ok), f"{domain.name}: {'right' if ok else 'not'} {sample['answer']!r}")


def parse_domains(domains: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Domain names from a comma-separated string or a list, each known and given once (None: all)."""
    if domains is None:
        return list(DOMAINS)
    names = [d.strip() for d in domains.split(",")] if isinstance(domains, str) else [str(d) for d in domains]
    names = [d for d in names if d]
    unknown = [d for d in names if d not in DOMAINS]
    if unknown or not names:
        raise ConfigError(f"unknown domain(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(DOMAINS)}")
    if len(set(names)) < len(names):
        raise ConfigError(f"each domain once, got {', '.join(names)}")
    return names


def generate_domain(name: str, n: int, seed: int = 0) -> list[dict]:
    """`n` distinct samples of one domain (id, prompt, answer, domain, metadata {"domain": name})."""
    domain = DOMAINS[parse_domains([name])[0]]
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= domain.space:
        raise ConfigError(f"domain {name!r} can draw 1 to {domain.space} distinct samples, asked for {n!r}")
    rng = random.Random(f"{seed}:{name}")
    samples: list[dict] = []
    seen: set[str] = set()
    for _ in range(200 * n):
        prompt, answer = domain.make(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        samples.append(
            {
                "id": f"{name}-{seed}-{len(samples)}",
                "prompt": prompt,
                "answer": answer,
                "domain": name,
                "metadata": {"domain": name},
            }
        )
        if len(samples) == n:
            return samples
    raise ConfigError(f"could not draw {n} distinct samples of domain {name!r}; lower n")


def multidomain_task(
    domains: str | list[str] | None = None, n: int = 40, seed: int = 0, test_fraction: float = 0.25
) -> Task:
    """`n` samples of every domain named (comma-separated; all by default), interleaved, scored by each
    sample's own domain checker. The train/test split is per domain, so every domain has held-out prompts."""
    names = parse_domains(domains)
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    for name in names:
        generate_domain(name, n, seed)  # fail now on bad settings

    def load() -> list[dict]:
        per_domain = [generate_domain(name, n, seed) for name in names]
        return [s for row in zip(*per_domain) for s in row]

    return Task(
        name="multidomain",
        loader=load,
        reward=DomainReward(),
        instruction=INSTRUCTION,
        max_tokens=24,
        stop=("\n",),
        test_fraction=test_fraction,
        seed=seed,
        stratify="domain",
    )
