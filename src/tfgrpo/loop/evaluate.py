"""Held-out evaluation: k samples per prompt, Mean@k and Pass@k, per condition (a library, its lessons,
and the baselines a library has to beat), all on the same prompts and generation seeds, repeated over
evaluation seeds. Each library condition is compared with the strongest baseline: a paired bootstrap
95% confidence interval over prompts, a paired sign-flip p-value, and Holm's correction over all the
comparisons of one evaluation."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..agents.base import Agent
from ..agents.trajectory import Tally
from ..core.knobs import MAX_RUN_SEED, knob
from ..core.library import TrainingFreeGRPO
from ..errors import ConfigError
from ..learn.rollout_log import Recorder
from ..learn.rollouts import RolloutConfig, rollout_batch
from ..llm.base import Backend
from ..rewards.base import Reward
from ._progress import Progress as ProgressDisplay

if TYPE_CHECKING:
    from ..semantic.lessons import LessonLibrary

log = logging.getLogger("tfgrpo.eval")

SEED_STRIDE = 1_000_003
"""Evaluation seed value v draws from `seed + v * SEED_STRIDE`: far from the per-batch offsets of one seed."""


@dataclass(frozen=True)
class EvalConfig(RolloutConfig):
    """The knobs of a held-out evaluation (and, through `RolloutConfig`, of its prompts)."""

    k: int = knob(4, "samples per prompt", minimum=1, flag="-k")
    temperature: float = knob(0.3, "sampling temperature of the policy", minimum=0.0, maximum=2.0)
    seed: int = knob(
        1234,
        "seed of the examples drawn and the sampling (the same for every condition)",
        minimum=0,
        maximum=MAX_RUN_SEED,
    )
    seeds: tuple[int, ...] = knob(
        (0,),
        "evaluation seeds, as values (0 1 2: three evaluations; not a count): the whole evaluation is repeated "
        "once per value, sampling with a seed derived from --seed and the value",
        minimum=0,
        maximum=1_000_000,
    )
    batch_size: int = knob(8, "prompts per generation call", minimum=1)
    success_threshold: float = knob(1.0, "a sample counts as solved for Pass@k when its reward is at least this")
    bootstrap: int = knob(2000, "bootstrap resamples for the confidence intervals and p-values", minimum=100)

    def __post_init__(self) -> None:
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):
            raise ConfigError(
                f"EvalConfig.seeds takes the evaluation seeds' values, e.g. (0, 1, 2), not a count; got {self.seeds}"
            )
        super().__post_init__()
        if not self.seeds or len(set(self.seeds)) < len(self.seeds):
            raise ConfigError(
                f"EvalConfig.seeds must hold each evaluation seed once (a seed given twice would count one "
                f"evaluation twice), got {self.seeds}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as JSON values (the template as its three texts)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["template"] = dataclasses.asdict(self.template)
        values["stop"] = list(self.stop)
        return values


@dataclass(frozen=True)
class LessonCondition:
    """A condition with a lesson library's lessons (paper mode) in the prompt, and with few-shot
    examples from `examples` too when given. The lessons (`LessonLibrary.render()`) go after the
    template's instruction in the system message (`placement="system"`) or before the question
    ("user"); everything else (query form, stop strings, sampling) is the evaluation's own, so the
    conditions differ only in what the prompt holds."""

    library: LessonLibrary
    examples: TrainingFreeGRPO | None = None
    placement: str = "system"

    def __post_init__(self) -> None:
        if self.placement not in ("system", "user"):
            raise ConfigError(f"lesson placement must be 'system' or 'user', got {self.placement!r}")

    def prompt_condition(self) -> dict:
        """The `rollout_batch` keywords that put this condition into the prompt."""
        return {"examples": self.examples, "lessons": self.library, "placement": self.placement}


@dataclass(frozen=True)
class Baseline:
    """What a user could do instead of training a library: the model zero-shot, or with a fixed set of
    examples in every prompt (`kind` "labelled": reference answers; "bootstrapped": the first
    successful rollouts on training prompts). `chat` and `stop_after_content` override the
    evaluation's prompting (None: as the evaluation's config says), so each zero-shot variant is a
    condition of its own. Examples enter the prompt through the same functions as a library's."""

    kind: str = "zero-shot"
    examples: tuple[tuple[str, str], ...] = ()
    chat: bool | None = None
    stop_after_content: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("zero-shot", "labelled", "bootstrapped"):
            raise ConfigError(f"baseline kind must be zero-shot, labelled or bootstrapped, got {self.kind!r}")
        if (self.kind == "zero-shot") != (not self.examples):
            raise ConfigError("a zero-shot baseline has no examples; a labelled or bootstrapped one needs some")

    def config(self, config: EvalConfig) -> EvalConfig:
        changes: dict[str, Any] = {}
        if self.chat is not None:
            changes["chat"] = self.chat
        if self.stop_after_content is not None:
            changes["stop_after_content"] = self.stop_after_content
        if self.examples:  # the fixed examples alone: no retrieval filter, no guidance
            changes.update(shots=len(self.examples), select="sample", where=(), where_fallback=False, guidance="none")
        return dataclasses.replace(config, **changes) if changes else config

    def prompt_condition(self) -> dict:
        if not self.examples:
            return {"examples": None}
        fixed = TrainingFreeGRPO(seed=0)
        for prompt, response in self.examples:
            # A success beside a failure: the success is kept with a positive advantage.
            fixed.add_rollout_group([(prompt, response), (prompt, "")], [1.0, 0.0])
        return {"examples": fixed}

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "chat": self.chat,
            "stop_after_content": self.stop_after_content,
            "examples": [list(e) for e in self.examples],
        }


Condition = TrainingFreeGRPO | LessonCondition | Baseline | None
"""A library's examples, its lessons, a baseline; None is the zero-shot baseline as configured."""


def is_baseline(condition: Condition) -> bool:
    return condition is None or isinstance(condition, Baseline)


def show_progress() -> Callable[[str, int, int], None]:
    """A `progress` callback for `evaluate` and `attribute_lessons`: the package's progress display (a
    bar on a terminal, lines otherwise, with the time taken and left), one over all the conditions
    scored together, naming the one being scored."""
    displays: list[ProgressDisplay] = []

    def report(condition: str, done: int, total: int) -> None:
        if not displays:
            displays.append(ProgressDisplay(total, "prompt", label="eval"))
        displays[0].update(done, condition)
        if done >= total:
            displays.pop().close()

    return report


def across(progress: Progress | None, index: int, count: int) -> Progress | None:
    """`progress` of condition `index` of `count` conditions of equal size scored one after the other,
    counted over all of them (so the display's time left is the whole evaluation's)."""
    if progress is None:
        return None

    def report(condition: str, done: int, total: int) -> None:
        progress(condition, index * total + done, count * total)

    return report


@dataclass
class ConditionResult:
    name: str
    rewards: np.ndarray
    """(seeds, prompts, k), or (prompts, k) for a single seed."""
    success_threshold: float
    baseline: bool = False
    description: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    """With an agent: its trajectories' figures (`Tally.to_dict`); empty for completions."""

    def __post_init__(self) -> None:
        if self.rewards.ndim == 2:
            self.rewards = self.rewards[None]

    @property
    def mean_at_k(self) -> float:
        return float(self.rewards.mean())

    @property
    def pass_at_k(self) -> float:
        return float(self.per_seed_pass().mean())

    def per_seed_mean(self) -> np.ndarray:
        return self.rewards.mean(axis=(1, 2))

    def per_seed_pass(self) -> np.ndarray:
        return (self.rewards >= self.success_threshold).any(axis=2).mean(axis=1)

    def per_prompt(self) -> np.ndarray:
        """Each prompt's mean reward over its k samples and every seed."""
        return self.rewards.mean(axis=(0, 2))

    @classmethod
    def from_dict(cls, name: str, data: dict, success_threshold: float) -> ConditionResult:
        """The result that `to_dict` wrote (as in an `eval --out` file)."""
        rewards = np.asarray(data["rewards"], dtype=float)
        return cls(
            name,
            rewards,
            success_threshold,
            baseline=data["baseline"],
            description=data["description"],
            figures=data.get("trajectories") or {},
        )

    def to_dict(self) -> dict:
        seeds = self.per_seed_mean()
        return {
            "baseline": self.baseline,
            "mean_at_k": self.mean_at_k,
            "pass_at_k": self.pass_at_k,
            "per_seed_mean_at_k": seeds.tolist(),
            "per_seed_pass_at_k": self.per_seed_pass().tolist(),
            "seed_std": float(seeds.std(ddof=1)) if len(seeds) > 1 else None,  # one seed: no spread
            "per_prompt": self.per_prompt().tolist(),
            "rewards": self.rewards.tolist(),
            "description": self.description,
            **({"trajectories": self.figures} if self.figures else {}),
        }


@dataclass
class Comparison:
    name: str
    baseline: str
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float = 1.0
    """Two-sided paired sign-flip test over prompts."""
    p_holm: float = 1.0
    """`p_value` after Holm's correction over every comparison of the evaluation."""


@dataclass
class EvalReport:
    conditions: list[ConditionResult]
    comparisons: list[Comparison]
    n_prompts: int
    k: int
    seeds: list[int] = field(default_factory=list)
    prompt_ids: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    """What the caller adds: the library file and its versions, the task, the model."""

    @property
    def strongest_baseline(self) -> str | None:
        baselines = [c for c in self.conditions if c.baseline]
        return max(baselines, key=lambda c: c.mean_at_k).name if baselines else None

    def table(self) -> str:
        width = max([14, *(len(c.name) for c in self.conditions)])
        seeds = f" x {len(self.seeds)} evaluation seeds" if len(self.seeds) > 1 else ""
        lines = [
            f"Held-out evaluation: {self.n_prompts} prompts x k={self.k} samples{seeds}",
            f"{'condition':<{width}} {'Mean@k':>8} {'Pass@k':>8}" + (f" {'seed sd':>8}" if seeds else ""),
        ]
        strongest = self.strongest_baseline
        for c in self.conditions:
            mark = "  (strongest baseline)" if c.name == strongest and len(self.conditions) > 1 else ""
            sd = f" {c.to_dict()['seed_std']:>8.3f}" if seeds else ""
            lines.append(f"{c.name:<{width}} {c.mean_at_k:>8.3f} {c.pass_at_k:>8.3f}{sd}{mark}")
            if c.figures:
                f = c.figures
                lines.append(
                    f"{'':<{width}} per rollout: {f['tool_calls_per_rollout']:.2f} tool calls, "
                    f"{f['tool_errors_per_rollout']:.2f} tool errors, {f['turns_per_rollout']:.2f} turns, "
                    f"{f['tokens_per_rollout']:.0f} tokens; answered {f['answered']:.0%}"
                )
        for d in self.comparisons:
            lines.append(
                f"{d.name} - {d.baseline}: Mean@k {d.mean_diff:+.3f} "
                f"(paired bootstrap 95% CI {d.ci_low:+.3f} .. {d.ci_high:+.3f}; p {d.p_value:.3f}, Holm {d.p_holm:.3f})"
            )
        if len(self.comparisons) > 1:
            lines.append(
                f"p: paired sign-flip test over prompts; Holm-corrected over {len(self.comparisons)} comparisons"
            )
        return "\n".join(lines + self.headline())

    def headline(self) -> list[str]:
        """One line per library condition: the baseline it beat or lost to (the strongest), by how much,
        and whether the confidence interval shows a difference at all."""
        baselines = sum(c.baseline for c in self.conditions)
        libraries = {c.name for c in self.conditions if not c.baseline}
        lines = []
        for d in self.comparisons:
            if d.name not in libraries:
                continue
            verb = "beat" if d.mean_diff > 0 else "lost to" if d.mean_diff < 0 else "tied with"
            which = f"the strongest of {baselines} baselines" if baselines > 1 else "the only baseline evaluated"
            shown = d.ci_low > 0 or d.ci_high < 0
            lines.append(
                f"Headline: {d.name} {verb} {d.baseline} ({which}) by {abs(d.mean_diff):.3f} Mean@k "
                f"(95% CI {d.ci_low:+.3f} .. {d.ci_high:+.3f}"
                + ("" if shown else "; it includes 0: no difference shown")
                + ")"
            )
        return lines

    def to_dict(self) -> dict:
        return {
            "kind": "evaluation",
            "n_prompts": self.n_prompts,
            "k": self.k,
            "seeds": self.seeds,
            "prompt_ids": self.prompt_ids,
            "strongest_baseline": self.strongest_baseline,
            "correction": "holm",
            "conditions": {c.name: c.to_dict() for c in self.conditions},
            "comparisons": [vars(d) for d in self.comparisons],
            "settings": self.settings,
            **self.meta,
        }


def paired_bootstrap_ci(
    diffs: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile confidence interval of the mean of per-prompt differences, prompts resampled."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def sign_flip_p_value(diffs: np.ndarray, resamples: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of a zero mean difference: each prompt's difference keeps or flips its sign at
    random (a paired randomization test); (1 + as extreme) / (1 + resamples)."""
    diffs = np.asarray(diffs, dtype=float)
    observed = abs(diffs.mean())
    if observed == 0:
        return 1.0
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(resamples, len(diffs)))
    extreme = int((np.abs((signs * diffs).mean(axis=1)) >= observed - 1e-12).sum())
    return (1 + extreme) / (1 + resamples)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all of them), in the given order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


Progress = Callable[[str, int, int], None]
"""Called as `progress(condition, prompts_done, prompts_total)` after each batch."""


def eval_seeds(config: EvalConfig) -> list[int]:
    """The sampling seed of each evaluation seed value."""
    return [config.seed + value * SEED_STRIDE for value in config.seeds]


def score_condition(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    grpo: Condition,
    config: EvalConfig,
    progress: Progress | None = None,
    name: str = "",
    agent: Agent | None = None,
    tally: Tally | None = None,
    record: Recorder | None = None,
) -> np.ndarray:
    """Rewards (seeds x prompts x k) for one condition; seeded per seed and batch, so every condition
    meets the same randomness. With `agent` each rollout is a trajectory it runs; `tally`, when given,
    adds up their figures; `record`, the rollout log's recorder, logs them (a transaction per batch)."""
    if isinstance(grpo, (LessonCondition, Baseline)):
        condition = grpo.prompt_condition()
    else:
        condition = {"examples": grpo}
    if isinstance(grpo, Baseline):
        config = grpo.config(config)
    seeds = eval_seeds(config)
    total = len(samples) * len(seeds)
    out = []
    for j, seed in enumerate(seeds):
        rows: list[list[float]] = []
        for start in range(0, len(samples), config.batch_size):
            batch = samples[start : start + config.batch_size]
            runs, scores = rollout_batch(
                backend, batch, reward, config.k, config, seed + start, **condition, agent=agent, record=record
            )
            if record is not None:
                record.flush()
            rows.extend([[s.value for s in group] for group in scores])
            if tally is not None:
                for group in runs:
                    for run in group:
                        tally.add(run)
            if progress is not None:
                progress(name, j * len(samples) + len(rows), total)
        out.append(rows)
    return np.asarray(out, dtype=float)


def compare(
    results: Sequence[ConditionResult], pairs: Sequence[tuple[ConditionResult, ConditionResult]], config: EvalConfig
) -> list[Comparison]:
    """Each (condition, reference) pair: the mean per-prompt difference, its paired bootstrap CI, a
    sign-flip p-value, and the Holm-corrected p over all the pairs."""
    comparisons = []
    for other, base in pairs:
        diffs = other.per_prompt() - base.per_prompt()
        low, high = paired_bootstrap_ci(diffs, config.bootstrap, config.seed)
        p = sign_flip_p_value(diffs, config.bootstrap, config.seed)
        comparisons.append(Comparison(other.name, base.name, float(diffs.mean()), low, high, p))
    for comparison, adjusted in zip(comparisons, holm([c.p_value for c in comparisons])):
        comparison.p_holm = adjusted
    return comparisons


def score_conditions(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    conditions: dict[str, Condition],
    config: EvalConfig = EvalConfig(),
    train_prompts: set[str] | None = None,
    progress: Progress | None = None,
    agent: Agent | None = None,
    record: Recorder | None = None,
) -> list[ConditionResult]:
    """Each condition (name -> library, `LessonCondition`, `Baseline`, None for zero-shot) scored on the
    same held-out samples, once per value of `config.seeds`. `train_prompts`, when given, is checked:
    evaluating on a training prompt is an error. With `agent`, every rollout is a trajectory it runs, and
    each result carries their figures. `record`: every rollout logged, under its condition's name."""
    if not samples:
        raise ConfigError("no evaluation samples")
    if not conditions:
        raise ConfigError("no conditions to evaluate")
    if train_prompts:
        leaked = [s["prompt"] for s in samples if s["prompt"] in train_prompts]
        if leaked:
            raise ConfigError(f"{len(leaked)} evaluation prompts are also training prompts, e.g. {leaked[0]!r:.80}")
    results = []
    for i, (name, grpo) in enumerate(conditions.items()):
        tally = Tally() if agent is not None else None
        shown = across(progress, i, len(conditions))
        logged = record.at(condition=name) if record is not None else None
        rewards = score_condition(backend, samples, reward, grpo, config, shown, name, agent, tally, logged)
        results.append(
            ConditionResult(
                name,
                rewards,
                config.success_threshold,
                baseline=is_baseline(grpo),
                description=grpo.describe() if isinstance(grpo, Baseline) else {"kind": _kind(grpo)},
                figures=tally.to_dict() if tally is not None else {},
            )
        )
    return results


def report_of(results: Sequence[ConditionResult], samples: Sequence[dict], config: EvalConfig) -> EvalReport:
    """The evaluation of conditions scored by `score_conditions` on these samples with this config, in
    one call or several (baselines scored once, each library later): every condition that is not a
    baseline is compared with the strongest baseline (the one with the highest Mean@k, chosen on these
    very prompts, which favours the baseline); with no library conditions, every baseline with the first."""
    if not results:
        raise ConfigError("no conditions to evaluate")
    shape = (len(config.seeds), len(samples), config.k)
    for result in results:
        if result.rewards.shape != shape:
            raise ConfigError(
                f"condition {result.name!r} was scored on {result.rewards.shape} (seeds, prompts, k), "
                f"not {shape}: results of other evaluations cannot be compared; evaluate it again"
            )
    baselines = [r for r in results if r.baseline]
    others = [r for r in results if not r.baseline]
    if baselines and others:
        strongest = max(baselines, key=lambda r: r.mean_at_k)
        pairs = [(other, strongest) for other in others]
    else:
        pairs = [(other, results[0]) for other in results[1:]]
    return EvalReport(
        list(results),
        compare(results, pairs, config),
        len(samples),
        config.k,
        seeds=eval_seeds(config),
        prompt_ids=[str(s.get("id", i)) for i, s in enumerate(samples)],
        settings=config.to_dict(),
    )


def evaluate(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    conditions: dict[str, Condition],
    config: EvalConfig = EvalConfig(),
    train_prompts: set[str] | None = None,
    progress: Progress | None = None,
    agent: Agent | None = None,
    record: Recorder | None = None,
) -> EvalReport:
    """`score_conditions`, then `report_of`: every condition on the same held-out samples, each library
    condition compared with the strongest baseline."""
    results = score_conditions(backend, samples, reward, conditions, config, train_prompts, progress, agent, record)
    return report_of(results, samples, config)


def _kind(condition: Condition) -> str:
    if condition is None:
        return "zero-shot"
    if isinstance(condition, LessonCondition):
        return "lessons+examples" if condition.examples is not None else "lessons"
    return "examples"


def labelled_examples(samples: Sequence[dict], shots: int, field: str = "answer") -> tuple[tuple[str, str], ...]:
    """The first `shots` training samples that have a reference answer in `field`, as (prompt, answer)."""
    return tuple((s["prompt"], str(s[field])) for s in samples if s.get(field) not in (None, ""))[:shots]


def bootstrap_examples(
    backend: Backend,
    samples: Sequence[dict],
    reward: Reward,
    config: EvalConfig,
    shots: int,
    max_prompts: int = 32,
    agent: Agent | None = None,
    record: Recorder | None = None,
) -> tuple[tuple[str, str], ...]:
    """The first successful zero-shot rollouts (reward >= the success threshold) on the training
    prompts, in order, one per prompt, until `shots` are found or `max_prompts` were tried (DSPy's
    bootstrapped few-shot). Seeded by `config.seed`, so the set is fixed for a run. `record`: the
    rollouts logged (condition "bootstrap")."""
    found: list[tuple[str, str]] = []
    pool = list(samples[:max_prompts])
    # Before any condition is scored, so no progress display yet: say what the model is doing.
    log.info("bootstrapped few-shot: looking for %d successful rollouts in up to %d training prompts", shots, len(pool))
    logged = record.at(condition="bootstrap") if record is not None else None
    for start in range(0, len(pool), config.batch_size):
        batch = pool[start : start + config.batch_size]
        groups, scores = rollout_batch(
            backend, batch, reward, config.k, config, config.seed + start, agent=agent, record=logged
        )
        if logged is not None:
            logged.flush()
        for sample, generations, group_scores in zip(batch, groups, scores):
            best = max(range(len(group_scores)), key=lambda i: group_scores[i].value)
            text = generations[best].text.strip()
            if group_scores[best].value >= config.success_threshold and text:
                found.append((sample["prompt"], text))
                if len(found) == shots:
                    return tuple(found)
    return tuple(found)


def zero_shot_name(chat: bool | None, stop_after_content: bool) -> str:
    """What a zero-shot condition is called: its mode ("zero-shot chat", "zero-shot text"; plain
    "zero-shot" in the backend's default mode) and the stop rule when on. The zero-shot condition as a
    config prompts (`None`) has the name of the fair baseline it equals, so no condition has two names."""
    mode = {True: " chat", False: " text", None: ""}[chat]
    return f"zero-shot{mode}" + (", stop after content" if stop_after_content else "")


def fair_baselines(
    backend: Backend,
    train_samples: Sequence[dict],
    reward: Reward,
    config: EvalConfig,
    shots: int = 3,
    reference_field: str = "answer",
    agent: Agent | None = None,
    record: Recorder | None = None,
) -> dict[str, Baseline]:
    """The baselines a library should be compared with: zero-shot in chat and in text mode, each with
    the task's stop strings as they are and with `stop_after_content` (when a stop string is only
    whitespace, so the rule changes something), labelled few-shot (when the training samples have
    reference answers) and bootstrapped few-shot (when any zero-shot rollout succeeded). The zero-shot
    condition `config` itself prompts is among them (with `config.chat` None: the one of the backend's
    default mode)."""
    conditions: dict[str, Baseline] = {}
    rule_matters = config.stop_after_content or any(s.isspace() for s in config.stop)
    for chat in (True, False):
        for after in [False, True] if rule_matters else [False]:
            conditions[zero_shot_name(chat, after)] = Baseline(chat=chat, stop_after_content=after)
    labelled = labelled_examples(train_samples, shots, reference_field)
    if labelled:
        conditions[f"labelled {len(labelled)}-shot"] = Baseline("labelled", labelled)
    boot = bootstrap_examples(backend, train_samples, reward, config, shots, agent=agent, record=record)
    if boot:
        conditions[f"bootstrapped {len(boot)}-shot"] = Baseline("bootstrapped", boot)
    return conditions


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
_T975: tuple[float, ...] = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160)
_T975 += (
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    return _T975[df - 1] if df <= len(_T975) else 1.96


def across_training_seeds(results: Sequence[dict]) -> dict:
    """Summary of one evaluation per training seed (each an `EvalReport.to_dict()`, with a "train_seed"):
    for every compared condition, its lift over that run's reference (the strongest baseline) per seed,
    the mean lift, a t-based 95% CI across training seeds (the seeds are the unit: no prompt-level
    pooling hides run-to-run noise), the standard deviation and the range."""
    if not results:
        raise ConfigError("no evaluations to summarise")
    lifts: dict[str, list[float]] = {}
    references: dict[str, list[str]] = {}
    for result in results:
        for comparison in result["comparisons"]:
            lifts.setdefault(comparison["name"], []).append(comparison["mean_diff"])
            references.setdefault(comparison["name"], []).append(comparison["baseline"])
    summary = {}
    for name, values in lifts.items():
        arr = np.asarray(values, dtype=float)
        sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        half = t975(len(arr) - 1) * sd / np.sqrt(len(arr)) if len(arr) > 1 else 0.0
        summary[name] = {
            "per_seed": arr.tolist(),
            "references": references[name],
            "mean": float(arr.mean()),
            "ci_low": float(arr.mean() - half),
            "ci_high": float(arr.mean() + half),
            "std": sd,
            "min": float(arr.min()),
            "max": float(arr.max()),
        }
    return {
        "kind": "repeat",
        "train_seeds": [r.get("train_seed") for r in results],
        "lifts": summary,
        "evaluations": list(results),
    }


def repeat_table(summary: dict) -> str:
    seeds = summary["train_seeds"]
    lines = [f"Lift over the strongest baseline across {len(seeds)} training seeds ({', '.join(map(str, seeds))})"]
    for name, s in summary["lifts"].items():
        per_seed = ", ".join(f"{v:+.3f}" for v in s["per_seed"])
        lines.append(
            f"{name}: mean {s['mean']:+.3f} (t 95% CI across seeds {s['ci_low']:+.3f} .. {s['ci_high']:+.3f}; "
            f"sd {s['std']:.3f}; per seed {per_seed})"
        )
    return "\n".join(lines)
