"""Advantage-weighted sampling in O(1) expected time, with O(1) insertion and removal.

P(exp) = exp(advantage / T) / sum of all weights. Experiences are kept in buckets by
k = floor(advantage / (T ln 2)), so that every weight in bucket k lies in [2**k, 2**(k+1)). A draw picks
a bucket by its total weight (a short cumulative table, rebuilt only after the library changed), then a
uniform member, accepted with probability weight / 2**(k+1) >= 1/2. Weights are never formed directly:
bucket totals are compared in log space, so no advantage or temperature overflows.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right

from .experience import Experience

_LN2 = math.log(2.0)
_KEY_LIMIT = 2**62  # bucket keys are clamped here; beyond it one bucket dominates all others anyway


class _Bucket:
    __slots__ = ("key", "members", "rels", "rel_sum")

    def __init__(self, key: int) -> None:
        self.key = key
        self.members: list[Experience] = []
        self.rels: list[float] = []  # weight / 2**k of each member, in [1, 2)
        self.rel_sum = 0.0


class AdvantageSampler:
    """Draws experiences by advantage (or uniformly when `weighted` is False); seedable."""

    def __init__(self, temperature: float, weighted: bool = True, seed: int | None = None) -> None:
        self._scale = temperature * _LN2  # advantage width of one bucket
        self._temperature = temperature
        self._weighted = weighted
        self._buckets: dict[int, _Bucket] = {}
        self._size = 0
        self._table: tuple[list[int], list[float]] | None = None
        self._random = random.Random(seed)

    def seed(self, seed: int | None) -> None:
        self._random.seed(seed)

    def __len__(self) -> int:
        return self._size

    def __contains__(self, exp: object) -> bool:
        """Whether this very experience object is a member, in O(1)."""
        if not isinstance(exp, Experience) or exp._bucket is None:
            return False
        bucket = self._buckets.get(exp._bucket.key)
        return bucket is exp._bucket and bucket.members[exp._pos] is exp

    def _key_and_rel(self, advantage: float) -> tuple[int, float]:
        if not self._weighted:
            return 0, 1.0
        x = advantage / self._scale
        if not -_KEY_LIMIT < x < _KEY_LIMIT:
            return (_KEY_LIMIT if x > 0 else -_KEY_LIMIT), 1.0
        key = math.floor(x)
        # (x - key) * ln 2 is the log of weight / 2**key; rounding may push it a hair outside [1, 2).
        return key, min(max(math.exp((x - key) * _LN2), 1.0), 2.0)

    def add(self, exp: Experience) -> None:
        key, rel = self._key_and_rel(exp.advantage)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(key)
        exp._bucket = bucket
        exp._pos = len(bucket.members)
        bucket.members.append(exp)
        bucket.rels.append(rel)
        bucket.rel_sum += rel
        self._size += 1
        self._table = None

    def add_many(self, experiences: list[Experience]) -> None:
        """`add` each, in order (a million-experience load: the bucket of each distinct advantage is
        looked up once)."""
        buckets = self._buckets
        of_advantage: dict[float, tuple[_Bucket, float]] = {}
        for exp in experiences:
            found = of_advantage.get(exp.advantage)
            if found is None:
                key, rel = self._key_and_rel(exp.advantage)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = _Bucket(key)
                found = of_advantage[exp.advantage] = (bucket, rel)
            bucket, rel = found
            exp._bucket = bucket
            exp._pos = len(bucket.members)
            bucket.members.append(exp)
            bucket.rels.append(rel)
            bucket.rel_sum += rel
        self._size += len(experiences)
        self._table = None

    def remove(self, exp: Experience) -> None:
        """Remove a member in O(1): the bucket's last member takes its place."""
        bucket = exp._bucket
        pos = exp._pos
        rel = bucket.rels[pos]
        last, last_rel = bucket.members.pop(), bucket.rels.pop()
        if last is not exp:
            bucket.members[pos] = last
            bucket.rels[pos] = last_rel
            last._pos = pos
        exp._bucket, exp._pos = None, -1
        if bucket.members:
            bucket.rel_sum -= rel
        else:
            del self._buckets[bucket.key]
        self._size -= 1
        self._table = None

    def clear(self) -> None:
        for bucket in self._buckets.values():
            for exp in bucket.members:
                exp._bucket, exp._pos = None, -1
        self._buckets.clear()
        self._size = 0
        self._table = None

    def _cumulative(self) -> tuple[list[int], list[float]]:
        if self._table is None:
            keys = list(self._buckets)
            log_weights = [k * _LN2 + math.log(self._buckets[k].rel_sum) for k in keys]
            top = max(log_weights)
            total = 0.0
            cumulative = []
            for lw in log_weights:
                total += math.exp(lw - top)
                cumulative.append(total)
            self._table = (keys, cumulative)
        return self._table

    def sample(self) -> Experience | None:
        if not self._size:
            return None
        return self._draw(*self._cumulative())

    def sample_many(self, k: int, replace: bool = True) -> list[Experience]:
        """k draws; without replacement, draws already taken are redrawn (successive sampling)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if not self._size:
            return []
        keys, cumulative = self._cumulative()
        draw = self._draw
        if replace:
            return [draw(keys, cumulative) for _ in range(k)]
        if k >= self._size:
            return self._ordered_by_draw(keys, cumulative)
        taken: dict[int, Experience] = {}
        attempts = 0
        while len(taken) < k:
            exp = draw(keys, cumulative)
            taken.setdefault(id(exp), exp)
            attempts += 1
            if attempts > 4 * k + 64 and len(taken) < k:
                # Redraws keep hitting a few dominant members: order the rest instead (same law).
                rest = [e for e in self._ordered_by_draw(keys, cumulative) if id(e) not in taken]
                return [*taken.values(), *rest[: k - len(taken)]]
        return list(taken.values())

    def _ordered_by_draw(self, keys: list[int], cumulative: list[float]) -> list[Experience]:
        # Every member, in the order successive weighted sampling would take them (Efraimidis-Spirakis
        # keys u**(1/w), largest first, compared as log(-log u) - log w, smallest first: no overflow).
        rnd = self._random.random
        members = []
        for bucket in self._buckets.values():
            for exp in bucket.members:
                if self._weighted:
                    score = math.log(-math.log(rnd() or 5e-324)) - exp.advantage / self._temperature
                else:
                    score = rnd()
                members.append((score, exp))
        members.sort(key=lambda pair: pair[0])
        return [exp for _, exp in members]

    def _draw(self, keys: list[int], cumulative: list[float]) -> Experience:
        rnd = self._random.random
        last = len(keys) - 1
        total = cumulative[-1]
        # The bucket once, by its total weight; then a member by rejection within it. (Redrawing the
        # bucket on a rejection would favour buckets whose members sit high in their [2**k, 2**(k+1)).)
        bucket = self._buckets[keys[min(bisect_right(cumulative, rnd() * total), last)]]
        members, rels = bucket.members, bucket.rels
        while True:
            j = int(rnd() * len(members))
            if rnd() * 2.0 < rels[j]:
                return members[j]
