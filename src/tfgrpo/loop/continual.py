"""Continual and multi-domain learning, measured (the guide's use cases 2 and 3): a library trained on
domains one after another (a phase per domain) or interleaved (`schedule="mixed"`: the same samples
shuffled together, cut into as many phases), with the held-out prompts of every domain evaluated before
training and after every phase, on the same prompts and generation seeds each time.

The result is the accuracy matrix R[phase][domain] (row 0: before any training) and the figures of GEM
(Lopez-Paz and Ranzato, "Gradient Episodic Memory for Continual Learning", 2017), for T domains learned
in order, R[i][j] the accuracy on domain j after phase i and b_j = R[0][j]:

- average accuracy  ACC = 1/T sum_j R[T][j]
- backward transfer BWT = 1/(T-1) sum_{j<T} (R[T][j] - R[j][j])      (negative: forgetting)
- forward transfer  FWT = 1/(T-1) sum_{j>1} (R[j-1][j] - b_j)        (what earlier domains taught a later one)

each a mean over training seeds with a t 95% CI across them (the seeds are the unit). A mixed schedule
learns every domain in every phase, so it has ACC and the curves but no BWT or FWT.

The baselines learn from the same stream: zero-shot (no state: its every row is the row before training),
bootstrapped k-shot (`fixed`: k of the model's own zero-shot successes on the training prompts seen so
far, one domain after another in the order they came, the same k in every prompt) and the same successes
retrieved per prompt by similarity (`knn`, DSPy's KNNFewShot over the model's own successes).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write, read_saved, saved_unreadable
from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..learn.rollouts import rollout_batch
from ..learn.update import Update
from ..llm.base import Backend
from ..llm.cache import CachedBackend, LLMCache
from ..rewards.base import Reward
from ._schedule import run_steps
from .config import RUN_FIELDS, TrainConfig
from .evaluate import Baseline, Condition, EvalConfig, score_conditions, t975
from .step import StepMetrics, run_step
from .training import check_resume

SCHEDULES = ("phases", "mixed")
BASELINES = ("zero-shot", "fixed", "knn")
"""The baselines' names: zero-shot, bootstrapped k-shot (fixed) and the same successes retrieved per prompt."""


def domain_of(sample: dict) -> str | None:
    """A sample's domain: `sample["metadata"]["domain"]`, else `sample["domain"]`; None when it has none."""
    tags = sample.get("metadata")
    value = tags.get("domain") if isinstance(tags, dict) else None
    value = value if value is not None else sample.get("domain")
    return None if value is None else str(value)


def by_domain(
    samples: Sequence[dict], domains: Sequence[str] | None = None, limit: int | None = None, split: str = "data"
) -> dict:
    """The samples of each domain (those named, in that order; by default every domain in the order met),
    at most `limit` of each. `split` names the samples in an error ("training samples", ...)."""
    groups: dict[str, list[dict]] = {}
    for sample in samples:
        domain = domain_of(sample)
        if domain is None:
            raise ConfigError(
                f"sample {sample.get('id', sample.get('prompt'))!r:.60} has no domain: continual runs need "
                "sample['metadata']['domain'] (or a 'domain' field) on every sample"
            )
        groups.setdefault(domain, []).append(sample)
    order = list(domains) if domains else list(groups)
    missing = [d for d in order if d not in groups]
    if missing:
        has = f"has {', '.join(groups)}" if groups else "is empty"
        raise ConfigError(f"no samples of domain(s) {', '.join(missing)}; the {split} {has}")
    return {d: groups[d][:limit] if limit else groups[d] for d in order}


@dataclass(frozen=True)
class Plan:
    """What a continual run trains on, phase by phase, and the held-out prompts it evaluates each time."""

    domains: tuple[str, ...]
    schedule: str
    phases: tuple[tuple[str, tuple[dict, ...]], ...]
    """(name, training samples) per phase: a domain's name, or "mixed N"."""
    test: tuple[dict, ...]
    """Every domain's held-out samples, a domain after another (the order of `domains`)."""

    def test_domains(self) -> list[str]:
        return [str(domain_of(s)) for s in self.test]

    def fingerprint(self) -> str:
        """A digest of the phases' samples and the held-out ones (a resumed run must see the same)."""
        digest = hashlib.sha256()
        for name, samples in self.phases:
            digest.update(json.dumps([name, [[str(s.get("id", "")), s["prompt"]] for s in samples]]).encode())
        digest.update(json.dumps([[str(s.get("id", "")), s["prompt"]] for s in self.test]).encode())
        return digest.hexdigest()[:16]


def make_plan(
    train: dict[str, list[dict]], test: dict[str, list[dict]], schedule: str = "phases", seed: int = 0
) -> Plan:
    """The phases of a run: one per domain in order ("phases"), or every training sample shuffled by `seed`
    and cut into as many equal phases ("mixed")."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    domains = tuple(train)
    if not domains or set(domains) != set(test):
        raise ConfigError(f"training and held-out domains differ: {sorted(train)} and {sorted(test)}")
    empty = [d for d in domains if not train[d] or not test[d]]
    if empty:
        raise ConfigError(f"domain(s) {', '.join(empty)} have no training or no held-out samples; draw more of each")
    if schedule == "phases":
        phases = tuple((d, tuple(train[d])) for d in domains)
    else:
        pool = [s for d in domains for s in train[d]]
        random.Random(f"{seed}:mixed").shuffle(pool)
        cuts = np.array_split(np.arange(len(pool)), len(domains))
        phases = tuple((f"mixed {i + 1}", tuple(pool[j] for j in cut)) for i, cut in enumerate(cuts))
    return Plan(domains, schedule, phases, tuple(s for d in domains for s in test[d]))


def phase_batches(samples: Sequence[dict], config: TrainConfig, phase: int) -> list[tuple[int, int, list[dict]]]:
    """A phase's steps, (epoch, step in epoch, batch): its samples shuffled by (seed, phase, epoch) each epoch."""
    steps = []
    for epoch in range(config.epochs):
        order = list(samples)
        random.Random(f"{config.seed}:{phase}:{epoch}").shuffle(order)
        for index, start in enumerate(range(0, len(order), config.batch_size)):
            steps.append((epoch, index, order[start : start + config.batch_size]))
    return steps


# ------------------------------------------------------------------------------------------ the figures


def matrix(rows: Sequence[np.ndarray], plan: Plan) -> np.ndarray:
    """R: one row per evaluation (rewards as `score_conditions` gives them, seeds x prompts x k), one column
    per domain, the mean reward over that domain's held-out prompts, samples and evaluation seeds."""
    owner = np.asarray(plan.test_domains())
    return np.asarray([[float(np.asarray(r)[:, owner == d].mean()) for d in plan.domains] for r in rows])


def gem_figures(R: np.ndarray, schedule: str = "phases") -> dict[str, Any]:
    """ACC, BWT and FWT of one matrix (row 0 before training, row i after phase i; BWT and FWT only for
    the "phases" schedule with two or more domains), and two curves: the mean accuracy over every domain
    after each phase ("all") and over the domains learned so far ("seen", phases only)."""
    R = np.asarray(R, dtype=float)
    T = R.shape[1]
    figures: dict[str, Any] = {"acc": float(R[-1].mean()), "bwt": None, "fwt": None}
    figures["all"] = [float(row.mean()) for row in R]
    if schedule == "phases" and R.shape[0] == T + 1:
        figures["seen"] = [None] + [float(R[p, :p].mean()) for p in range(1, T + 1)]
        if T >= 2:
            figures["bwt"] = float(np.mean([R[T, j] - R[j + 1, j] for j in range(T - 1)]))
            figures["fwt"] = float(np.mean([R[j, j] - R[0, j] for j in range(1, T)]))
    return figures


def across_seeds(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean, t 95% CI across training seeds, sd and the values (None when a figure is not defined)."""
    if not values or any(v is None for v in values):
        return None
    arr = np.asarray(values, dtype=float)
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    half = t975(len(arr) - 1) * sd / np.sqrt(len(arr)) if len(arr) > 1 else 0.0
    mean = float(arr.mean())
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "per_seed": arr.tolist()}


def summarise(
    matrices: dict[str, dict[int, np.ndarray]], plan: Plan, baselines: Sequence[str] = BASELINES
) -> dict[str, Any]:
    """Every condition's matrix per training seed, their mean, and the figures across seeds; each condition
    that is not a baseline also gets its ACC minus the strongest baseline's (the baseline with the highest
    mean ACC), seed by seed, with a t 95% CI across seeds."""
    meta = {
        "kind": "continual",
        "plan": plan.fingerprint(),
        "domains": list(plan.domains),
        "schedule": plan.schedule,
        "phases": ["before training", *(name for name, _ in plan.phases)],
        "test_prompts": {d: plan.test_domains().count(d) for d in plan.domains},
        "train_prompts": {name: len(samples) for name, samples in plan.phases},
    }
    return _summary(matrices, meta, [b for b in baselines if b in matrices])


SUMMARY_KEYS = ("kind", "plan", "domains", "schedule", "phases", "test_prompts", "train_prompts")


def merge(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary of the conditions of several (continual runs on the same plan: the same phases, held-out
    prompts and, for a baseline in more than one, the same scores), every library compared with the
    strongest baseline of them all."""
    if not summaries:
        raise ConfigError("no continual results to merge")
    first = summaries[0]
    matrices: dict[str, dict[int, np.ndarray]] = {}
    baselines: list[str] = []
    for summary in summaries:
        if summary.get("kind") != "continual" or summary.get("plan") != first.get("plan"):
            raise ConfigError("continual results of different plans (phases, held-out prompts) cannot be compared")
        for name, (per_seed, baseline) in check_continual(summary).items():
            if name in matrices and any(not np.array_equal(matrices[name].get(s, R), R) for s, R in per_seed.items()):
                raise ConfigError(f"{name!r} was scored differently in two results; give each condition one name")
            matrices.setdefault(name, {}).update(per_seed)
            if baseline and name not in baselines:
                baselines.append(name)
    if len({R.shape for per_seed in matrices.values() for R in per_seed.values()}) != 1:
        raise ConfigError("continual results whose accuracy matrices differ in shape cannot be merged")
    return _summary(matrices, {k: first[k] for k in SUMMARY_KEYS}, baselines)


def check_continual(summary: dict[str, Any]) -> dict[str, tuple[dict[int, np.ndarray], bool]]:
    """Each condition of a continual result: its matrix per training seed and whether it is a baseline;
    a ConfigError for a result of another shape (result files come from elsewhere)."""
    if any(k not in summary for k in SUMMARY_KEYS) or summary["schedule"] not in ("phases", "mixed"):
        raise ConfigError(f"a continual result needs {', '.join(SUMMARY_KEYS)}; write it again with `tfgrpo continual`")
    try:
        conditions = {
            str(name): (
                {int(seed): np.asarray(R, dtype=float) for seed, R in c["R"].items()},
                bool(c["baseline"]),
            )
            for name, c in summary["conditions"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"a continual result of another shape ({type(exc).__name__}: {str(exc)[:200]}); "
            "write it again with `tfgrpo continual`"
        ) from None
    try:
        shape = (len(summary["phases"]), len(summary["domains"]))  # the phases: "before", then each trained
    except TypeError:
        raise ConfigError("a continual result whose phases or domains are not lists") from None
    for name, (per_seed, _) in conditions.items():
        if not per_seed:
            raise ConfigError(f"a continual result whose condition {name!r} has no training seed's matrix")
        if any(R.shape != shape or not np.isfinite(R).all() for R in per_seed.values()):
            raise ConfigError(
                f"a continual result whose matrices of {name!r} are not {shape[0]} rows (before training and "
                f"after each phase) by {shape[1]} domains of numbers"
            )
    return conditions


def recomputed(summary: dict[str, Any]) -> dict[str, Any]:
    """A continual result's figures made again from its matrices (a file's own figures are not trusted)."""
    conditions = check_continual(summary)
    baselines = [name for name, (_, baseline) in conditions.items() if baseline]
    return {
        **summary,
        **_summary({n: m for n, (m, _) in conditions.items()}, {k: summary[k] for k in SUMMARY_KEYS}, baselines),
    }


def _summary(matrices: dict[str, dict[int, np.ndarray]], meta: dict[str, Any], baselines: Sequence[str]) -> dict:
    schedule = meta["schedule"]
    conditions: dict[str, Any] = {}
    for name, per_seed in matrices.items():
        seeds = sorted(per_seed)
        figures = {s: gem_figures(per_seed[s], schedule) for s in seeds}
        conditions[name] = {
            "baseline": name in baselines,
            "seeds": seeds,
            "R": {str(s): per_seed[s].tolist() for s in seeds},
            "R_mean": np.mean([per_seed[s] for s in seeds], axis=0).tolist(),
            **{key: across_seeds([figures[s][key] for s in seeds]) for key in ("acc", "bwt", "fwt")},
            "curves": {
                key: [across_seeds([figures[s][key][p] for s in seeds]) for p in range(len(figures[seeds[0]][key]))]
                for key in ("all", "seen")
                if key in figures[seeds[0]]
            },
        }
    scored = [b for b in baselines if b in conditions and conditions[b]["acc"] is not None]
    strongest = max(scored, key=lambda b: conditions[b]["acc"]["mean"]) if scored else None
    lifts = {}
    if strongest is not None:
        reference = conditions[strongest]
        for name, c in conditions.items():
            common = [s for s in c["seeds"] if s in reference["seeds"]]
            if c["baseline"] or not common:
                continue
            acc = dict(zip(c["seeds"], c["acc"]["per_seed"]))
            base = dict(zip(reference["seeds"], reference["acc"]["per_seed"]))
            lifts[name] = {"baseline": strongest, **(across_seeds([acc[s] - base[s] for s in common]) or {})}
    return {**meta, "strongest_baseline": strongest, "conditions": conditions, "lifts": lifts}


def table(summary: dict[str, Any]) -> str:
    """The figures of every condition, and each library's lift over the strongest baseline, as text."""

    def fig(value: dict | None) -> str:
        if value is None:
            return "n/a"
        if len(value.get("per_seed", ())) == 1:  # one training seed: no interval
            return f"{value['mean']:+.3f} (one seed)".ljust(25)
        return f"{value['mean']:+.3f} ({value['ci_low']:+.3f} .. {value['ci_high']:+.3f})"

    seeds = max((len(c["seeds"]) for c in summary["conditions"].values()), default=0)
    lines = [
        f"Continual ({summary['schedule']}): {', '.join(summary['domains'])}; {seeds} training seed(s); "
        "mean (t 95% CI across training seeds)",
        f"{'condition':<22} {'ACC':>26} {'BWT':>26} {'FWT':>26}",
    ]
    for name, c in summary["conditions"].items():
        mark = " (strongest baseline)" if name == summary["strongest_baseline"] else ""
        lines.append(f"{name:<22} {fig(c['acc']):>26} {fig(c['bwt']):>26} {fig(c['fwt']):>26}{mark}")
    for name, lift in summary["lifts"].items():
        if "mean" in lift:
            lines.append(f"{name} - {lift['baseline']}: ACC {fig(lift)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ running


Scoring = dict[str, tuple[Condition, EvalConfig]]
"""Conditions to score, each with the prompting it is scored with."""


@dataclass
class Evaluator:
    """Scores conditions on a plan's held-out prompts (every domain's), the same prompts and seeds each
    time, and keeps each scoring in a JSON file, reused when made with the same identity."""

    backend: Backend
    reward: Reward
    plan: Plan
    progress: Callable[[str, int, int], None] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    """What else the scores come from (the model, the reward, the answers): saved with each scoring."""

    def rows(
        self, path: Path, make: Callable[[], Scoring], state: dict[str, Any], refuse: str | None = None
    ) -> dict[str, np.ndarray]:
        """Each condition's rewards (seeds x prompts x k): read back from `path` when it was written for the
        same plan, prompting and `state` (what the conditions were made of: a library's step, a pool), else
        scored and written there; with `refuse`, not scored: that error is raised instead."""
        conditions = make()
        expected = {
            "plan": self.plan.fingerprint(),
            "source": self.source,
            "state": state,
            "conditions": {n: json.loads(json.dumps(c.to_dict(), default=str)) for n, (_, c) in conditions.items()},
        }
        saved = _saved(path, expected)
        if saved is not None:
            try:
                rewards = {name: np.asarray(saved["rewards"][name], dtype=float) for name in conditions}
                if all(r.ndim == 3 for r in rewards.values()):
                    return rewards
            except (KeyError, TypeError, ValueError):
                pass
            saved_unreadable(path, "its scores are of another shape")
        if refuse is not None:
            raise ConfigError(refuse)
        rewards = {}
        for name, (condition, config) in conditions.items():
            scored = score_conditions(
                self.backend, list(self.plan.test), self.reward, {name: condition}, config, progress=self.progress
            )
            rewards[name] = scored[0].rewards
        record = {"identity": expected, "rewards": {n: r.tolist() for n, r in rewards.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: json.dump(record, f))
        return rewards


def run_identity(plan: Plan, config: TrainConfig) -> dict[str, Any]:
    """What a continual library's stored position belongs to (checked on resume)."""
    return {"continual": plan.fingerprint(), "schedule": plan.schedule, **{f: getattr(config, f) for f in RUN_FIELDS}}


def train_library(
    policy: Backend,
    reward: Reward,
    plan: Plan,
    updates: Sequence[Update],
    config: TrainConfig,
    evaluate_phase: Callable[[int, int], None],
    *,
    cache: LLMCache | None = None,
    metrics_path: str | Path | None = None,
    report: Callable[[StepMetrics, int], None] | None = None,
) -> list[StepMetrics]:
    """Train the `updates`' libraries phase after phase, global steps numbered across phases, calling
    `evaluate_phase(p, last)` after phase p's last global step `last` (also on a resume that finds phase p
    committed: a run killed between a phase's last step and its evaluation evaluates the library it left;
    an evaluation must be kept, as `Evaluator.rows` keeps it, before the next phase changes the library)."""
    identity = run_identity(plan, config)
    check_resume(updates, identity)
    done = min(u.done() for u in updates)
    schedule = [phase_batches(samples, config, p) for p, (_, samples) in enumerate(plan.phases, start=1)]
    total = sum(len(s) for s in schedule)
    history: list[StepMetrics] = []
    start = 0

    def step(batch: list[dict], epoch: int, index: int, global_step: int, phase: int) -> StepMetrics:
        return run_step(
            policy, batch, reward, updates, config, epoch=epoch, step=index, global_step=global_step, cache=cache,
            progress_extra={"run": identity, "phase": phase},
        )  # fmt: skip

    for p, ((_, samples), steps) in enumerate(zip(plan.phases, schedule), start=1):
        history += run_steps(
            list(samples),
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            done=done,
            step=functools.partial(step, phase=p),
            report=report or (lambda metrics, total: None),
            metrics_path=metrics_path,
            batches=steps,
            start=start,
            total=total,
        )
        start += len(steps)
        evaluate_phase(p, start)
    return history


def bootstrap_pool(
    policy: Backend,
    reward: Reward,
    samples: Sequence[dict],
    config: TrainConfig,
    phase: int,
    path: Path,
    cache: LLMCache | None = None,
    success_threshold: float = 1.0,
    source: dict[str, Any] | None = None,
) -> list[tuple[dict, str]]:
    """The model's own successes on one phase's training prompts, zero-shot (no examples), G rollouts per
    prompt at the training temperature, seeded by (seed, phase): the first success of each prompt that has
    one, as (sample, response). Kept in `path` (JSON), read back when it was made the same way."""
    samples = list(samples)
    identity = {
        "prompts": [[str(s.get("id", "")), s["prompt"]] for s in samples],
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        "phase": phase,
        "threshold": success_threshold,
        "source": source or {},
    }
    saved = _saved(path, identity)
    if saved is not None:
        by_id = {str(s.get("id", "")): s for s in samples}
        successes = saved.get("successes")
        if isinstance(successes, list) and all(
            isinstance(x, list) and len(x) == 2 and x[0] in by_id and isinstance(x[1], str) for x in successes
        ):
            return [(by_id[i], text) for i, text in successes]
        saved_unreadable(path, "its successes are of another shape")
    model = CachedBackend(policy, cache, namespace="policy") if cache is not None else policy
    found: list[tuple[dict, str]] = []
    seed = config.seed * 1_000_003 + 500_000 + phase  # far from the training steps' seeds
    for start in range(0, len(samples), config.batch_size):
        batch = samples[start : start + config.batch_size]
        groups, scores = rollout_batch(model, batch, reward, config.group_size, config, seed + start, examples=None)
        for sample, runs, group in zip(batch, groups, scores):
            best = next((i for i, s in enumerate(group) if s.value >= success_threshold and runs[i].text.strip()), None)
            if best is not None:
                found.append((sample, runs[best].text.strip()))
    record = {"identity": identity, "successes": [[str(s.get("id", "")), text] for s, text in found]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: json.dump(record, f))
    return found


def _saved(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """What a run saved at `path` when it was made the same way (`identity`), else None."""
    saved = read_saved(path)
    return saved if saved is not None and saved.get("identity") == identity else None


def fixed_shots(pool: Sequence[tuple[dict, str]], shots: int) -> tuple[tuple[str, str], ...]:
    """The bootstrapped k-shot set: the successes taken one domain after another, in the order the domains
    came (the first success of each, then the second of each, ...), until `shots` are taken."""
    queues: dict[str, list[tuple[str, str]]] = {}
    for sample, text in pool:
        queues.setdefault(str(domain_of(sample)), []).append((sample["prompt"], text))
    chosen: list[tuple[str, str]] = []
    while len(chosen) < shots and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < shots:
                chosen.append(queue.pop(0))
    return tuple(chosen)


def knn_library(pool: Sequence[tuple[dict, str]]) -> TrainingFreeGRPO:
    """The pool as an in-memory library for retrieval: every success kept, with its domain, at one advantage."""
    library = TrainingFreeGRPO(seed=0)
    for sample, text in pool:
        domain = domain_of(sample)
        library.add_rollout_group(
            [(sample["prompt"], text), (sample["prompt"], "")], [1.0, 0.0], {"domain": str(domain)} if domain else None
        )
    return library


def baseline_conditions(pool: Sequence[tuple[dict, str]], shots: int) -> dict[str, Condition]:
    """The two baselines made of the successes seen so far: `fixed` (bootstrapped k-shot) and `knn`."""
    conditions: dict[str, Condition] = {}
    fixed = fixed_shots(pool, shots)
    if fixed:
        conditions["fixed"] = Baseline("bootstrapped", fixed)
        conditions["knn"] = knn_library(pool)
    return conditions


def knn_config(config: EvalConfig, retrieval_mode: str) -> EvalConfig:
    """The prompting of the `knn` baseline: the evaluation's, with the successes retrieved per prompt."""
    return dataclasses.replace(
        config,
        select="retrieve",
        retrieval_mode=retrieval_mode,
        where=(),
        where_fallback=False,
        guidance="none",
        advantage_weight=0.0,
    )


def baseline_scoring(pool: Sequence[tuple[dict, str]], config: EvalConfig, retrieval_mode: str) -> Scoring:
    """The `fixed` and `knn` baselines of a pool, each with its prompting."""
    base = baseline_config(config)
    return {
        name: (condition, knn_config(base, retrieval_mode) if name == "knn" else base)
        for name, condition in baseline_conditions(pool, config.shots).items()
    }


def baseline_config(config: EvalConfig) -> EvalConfig:
    """The evaluation's prompting without what only a library condition uses (retrieval, routing, guidance,
    contrast, lessons), so the baselines are the same whatever library they are set beside."""
    return dataclasses.replace(
        config,
        select="sample",
        where=(),
        where_fallback=False,
        guidance="none",
        advantage_weight=0.0,
        min_relevance=0.0,
        contrast=False,
        lessons_k=0,
    )


def run_baselines(
    evaluator: Evaluator,
    policy: Backend,
    config: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
    *,
    retrieval_mode: str = "lexical",
    cache: LLMCache | None = None,
) -> dict[str, list[np.ndarray | None]]:
    """The `fixed` and `knn` baselines of one training seed, phase by phase: the successes of each phase's
    training prompts join the pool (`bootstrap_pool`), then both are scored (None for a phase before any
    success: they prompt as zero-shot does then). Every file in `folder`."""
    pool: list[tuple[dict, str]] = []
    rows: dict[str, list[np.ndarray | None]] = {"fixed": [], "knn": []}
    for p, (_, samples) in enumerate(evaluator.plan.phases, start=1):
        pool += bootstrap_pool(
            policy, evaluator.reward, samples, config, p, folder / f"pool-phase{p}.json", cache,
            eval_config.success_threshold, evaluator.source,
        )  # fmt: skip

        state = {"pool": [[str(s.get("id", "")), text] for s, text in pool]}
        make = functools.partial(baseline_scoring, list(pool), eval_config, retrieval_mode)
        scored = evaluator.rows(folder / f"phase{p}.json", make, state) if pool else {}
        for name in rows:  # no success yet: the baselines prompt as zero-shot does
            rows[name].append(scored.get(name))
    return rows


def run_library(
    evaluator: Evaluator,
    policy: Backend,
    updates: Sequence[Update],
    condition: Callable[[], Condition],
    name: str,
    config: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
    *,
    cache: LLMCache | None = None,
    metrics_path: str | Path | None = None,
    report: Callable[[StepMetrics, int], None] | None = None,
    on_phase: Callable[[int, np.ndarray], None] | None = None,
) -> list[np.ndarray]:
    """One training seed of a library condition: trained phase by phase (`train_library`), `condition()`
    (what its libraries put into a prompt) scored after each phase; the rewards of each phase, in order."""
    rows: dict[int, np.ndarray] = {}

    def evaluate_phase(p: int, last: int) -> None:
        stale = None
        if min(u.done() for u in updates) != last:
            stale = (
                f"the evaluation after phase {p} is not in {folder} and the library has been trained past it; "
                "it cannot be evaluated as it was: start again with a new library (-l) and --out"
            )
        scored = evaluator.rows(
            folder / f"phase{p}.json", lambda: {name: (condition(), eval_config)}, {"phase": p, "step": last}, stale
        )
        rows[p] = scored[name]
        if on_phase is not None:
            on_phase(p, scored[name])

    train_library(
        policy, evaluator.reward, evaluator.plan, updates, config, evaluate_phase,
        cache=cache, metrics_path=metrics_path, report=report,
    )  # fmt: skip
    return [rows[p] for p in sorted(rows)]
