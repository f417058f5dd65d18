"""`tfgrpo report`: one self-contained HTML file about a library: training curves from its metrics log,
the library's growth and advantages, evaluation results with their intervals and seeds, lesson
attribution, the lesson history with diffs, and the top experiences. Every plot is inline SVG drawn by
matplotlib; no script, style sheet, font or image is fetched, so the file opens with no network. All
library text is model output and is escaped before it is written."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..core.files import atomic_write
from ..core.store import is_store_target, library_label, shown_target, store_exists
from ..errors import ConfigError, LibraryNotFoundError
from . import _plots as plots

TOP_EXPERIENCES = 10


def metrics_paths(library: str | os.PathLike) -> list[Path]:
    """The metrics logs `tfgrpo train` writes next to a library (examples, then lessons)."""
    label = library_label(library)
    return [p for p in (Path(f"{label}.metrics.jsonl"), Path(f"{label}.lessons.metrics.jsonl")) if p.exists()]


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The step records of a metrics log, in order; lines that are not step records are left out."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "global_step" in record:
            records.append(record)
    return records


def read_result(path: str | os.PathLike) -> dict:
    """An `eval --out`, `attribute --out`, `repeat` or `continual` result file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no result file at {path} (write one with `tfgrpo eval --out {path}`)") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a JSON result file ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") not in ("evaluation", "attribution", "repeat", "continual"):
        raise ConfigError(f"{path} is not an eval, attribute, repeat or continual result (no 'kind' of those)")
    return data


def write_report(
    library: str | os.PathLike,
    out: str | os.PathLike,
    results: Sequence[str | os.PathLike | tuple[str, dict]] = (),
    metrics: Sequence[str | os.PathLike] | None = None,
    side_by_side: dict | None = None,
) -> Path:
    """Write the report of `library` (with the result files `results`, each a path or (path, what was read
    from it), and the metrics logs `metrics`, default: those next to the library) to `out`, atomically;
    returns its path. `side_by_side`: several continual results merged into one
    (`tfgrpo.loop.continual.merge`), drawn as one comparison."""
    if not (store_exists(library) if is_store_target(library) else os.path.exists(library)):
        raise LibraryNotFoundError(f"no library at {shown_target(library)}")
    loaded = [r if isinstance(r, tuple) else (str(r), read_result(r)) for r in results]
    logs = [Path(p) for p in metrics] if metrics is not None else metrics_paths(library)
    html = render(str(library), loaded, [(str(p), read_metrics(p)) for p in logs], side_by_side)
    atomic_write(out, lambda f: print(html, end="", file=f))
    return Path(out)


# ------------------------------------------------------------------------------------------ sections


def render(
    library: str, results: list[tuple[str, dict]], logs: list[tuple[str, list[dict]]], side_by_side: dict | None = None
) -> str:
    experiences, stats, lessons = _read_library(library)
    sections = [_summary(library, stats, lessons, results, logs)]
    sections += [_training(name, records) for name, records in logs if records]
    sections.append(_advantages(experiences))
    kinds = {"evaluation": _evaluation, "attribution": _attribution, "repeat": _repeat, "continual": _continual}
    for name, result in results:
        try:
            sections.append(kinds[result["kind"]](name, result))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            # A result file is data from elsewhere: a field missing or of another shape is the file's fault.
            raise ConfigError(
                f"{name}: not a readable {result['kind']} result ({type(exc).__name__}: {str(exc)[:200]}); "
                f"write it again with the tfgrpo command that makes it"
            ) from None
    if side_by_side is not None:
        sections.append(_continual("side by side", side_by_side, "Continual conditions side by side"))
    if lessons is not None:
        sections.append(_history(lessons))
    sections.append(_top(experiences))
    body = "\n".join(s for s in sections if s)
    return PAGE.format(title=escape(f"tfgrpo report: {Path(shown_target(library)).name}"), body=body)


def _read_library(path: str) -> tuple[list, Any, Any]:
    from ..core.library import TrainingFreeGRPO

    if is_store_target(path):
        with TrainingFreeGRPO.open(path) as grpo:
            experiences, stats = list(grpo.experience_library), grpo.stats()
        from ..semantic.lessons import LessonLibrary

        lessons = None
        if LessonLibrary.present_in(path):
            with LessonLibrary(path) as library:
                lessons = {"current": library.lessons, "version": library.version, "history": library.history()}
        return experiences, stats, lessons
    grpo = TrainingFreeGRPO()
    grpo.load_from_file(path)
    return list(grpo.experience_library), grpo.stats(), None


def _plot(plot_id: str, title: str, svg: str, note: str = "") -> str:
    caption = f"<figcaption>{escape(title)}{(' — ' + escape(note)) if note else ''}</figcaption>"
    return f'<figure class="plot" id="plot-{escape(plot_id)}">{svg}{caption}</figure>'


def _section(title: str, content: str) -> str:
    return f"<section><h2>{escape(title)}</h2>\n{content}\n</section>"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _summary(library: str, stats: Any, lessons: Any, results: list, logs: list) -> str:
    rows = [
        ("library", shown_target(library)),
        ("experiences stored now", stats.current_library_size),
        ("rollouts seen / stored / pruned", f"{stats.total_rollouts} / {stats.total_stored} / {stats.total_pruned}"),
    ]
    if lessons is not None:
        rows.append(("lessons (version)", f"{len(lessons['current'])} (v{lessons['version']})"))
    rows += [("metrics logs", ", ".join(name for name, _ in logs) or "none found")]
    rows += [("result files", ", ".join(name for name, _ in results) or "none given")]
    rows += [("written", datetime.datetime.now().isoformat(timespec="seconds")), ("tfgrpo", __version__)]
    return _section("Summary", _table(("", ""), rows))


def _training(name: str, records: list[dict]) -> str:
    steps = [r["global_step"] for r in records]
    parts = [
        _plot(
            "reward",
            "Reward and signal share per step",
            plots.lines(
                steps,
                {"mean reward": [r.get("reward_mean") for r in records]},
                "step",
                "mean reward",
                right={
                    "label": "signal share",
                    "series": {"signal share": [r.get("signal_share", 0) for r in records]},
                },
            ),
            "signal share: groups whose rollouts differ in reward (the only ones that teach anything)",
        )
    ]
    if any("library_size" in r for r in records):
        stored = np.cumsum([r.get("stored", 0) for r in records]).tolist()
        pruned = np.cumsum([r.get("pruned", 0) for r in records]).tolist()
        series = {"library size": [r.get("library_size") for r in records], "stored (total)": stored}
        series["pruned (total)"] = pruned
        parts.append(
            _plot(
                "library",
                "Library size, stored and pruned over time",
                plots.lines(steps, series, "step", "experiences"),
            )
        )
    if any("lesson_version" in r for r in records):
        series = {"lessons": [r.get("lessons") for r in records], "applied ops": [r.get("applied") for r in records]}
        parts.append(
            _plot("lessons", "Lessons and applied operations per step", plots.lines(steps, series, "step", "count"))
        )
    if any("trajectories" in r for r in records):
        figures = [r.get("trajectories") or {} for r in records]
        series = {
            name: [f.get(f"{key}_per_rollout") for f in figures]
            for name, key in (("tool calls", "tool_calls"), ("tool errors", "tool_errors"), ("turns", "turns"))
        }
        parts.append(
            _plot(
                "trajectories",
                "Agent runs: tool calls, tool errors and turns per rollout",
                plots.lines(steps, series, "step", "per rollout"),
            )
        )
    tokens = [r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in records]
    parts.append(
        _plot(
            "tokens",
            "Tokens and cost per step",
            plots.lines(
                steps,
                {"tokens": tokens},
                "step",
                "tokens",
                right={"label": "cost (USD)", "series": {"cost": [r.get("cost", 0.0) for r in records]}},
            ),
        )
    )
    return _section(f"Training ({name}, {len(records)} steps)", "\n".join(parts))


def _advantages(experiences: list) -> str:
    if not experiences:
        return _section("Advantage distribution", "<p>The library holds no experiences.</p>")
    values = [e.advantage for e in experiences]
    return _section(
        "Advantage distribution",
        _plot(
            "advantages", f"Advantages of the {len(values)} stored experiences", plots.histogram(values, "advantage")
        ),
    )


def _mean_ci(values: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _evaluation(name: str, result: dict) -> str:
    conditions = result["conditions"]
    names = list(conditions)
    means = [conditions[c]["mean_at_k"] for c in names]
    cis = [_mean_ci(np.asarray(conditions[c]["per_prompt"], dtype=float)) for c in names]
    seeds = result.get("seeds") or []
    strongest = result.get("strongest_baseline")
    plot = plots.intervals(
        names,
        means,
        [c[0] for c in cis],
        [c[1] for c in cis],
        "Mean@k (95% bootstrap CI over prompts; x: one evaluation seed)",
        points=[conditions[c]["per_seed_mean_at_k"] for c in names] if len(seeds) > 1 else None,
        highlight=strongest,
    )
    spread = len(seeds) > 1  # one seed has no spread to show (not a spread of 0)
    rows = [
        (
            c,
            "baseline" if conditions[c]["baseline"] else "library",
            conditions[c]["mean_at_k"],
            conditions[c]["pass_at_k"],
        )
        + ((conditions[c].get("seed_std"),) if spread else ())
        for c in names
    ]
    head = ("condition", "role", "Mean@k", "Pass@k") + (("sd across eval seeds",) if spread else ())
    table = _table(head, rows)
    comparisons = result.get("comparisons", [])
    cmp_rows = [
        (
            f"{d['name']} - {d['baseline']}",
            d["mean_diff"],
            f"{d['ci_low']:+.3f} .. {d['ci_high']:+.3f}",
            d.get("p_value"),
            d.get("p_holm"),
        )
        for d in comparisons
    ]
    note = (
        f"<p>{result['n_prompts']} held-out prompts, k = {result['k']}, "
        + (f"{len(seeds)} evaluation seeds. " if spread else "one evaluation seed, so no spread across seeds. ")
        + f"Strongest baseline (red): {escape(str(strongest))}. p: paired sign-flip test over prompts; "
        f"Holm-corrected over the {len(comparisons)} comparison(s).</p>"
    )
    content = _plot(f"eval-{_slug(name)}", "Evaluation conditions", plot) + note + table
    if cmp_rows:
        content += _table(("comparison", "Mean@k difference", "95% CI", "p", "Holm p"), cmp_rows)
    runs = [(c, conditions[c]["trajectories"]) for c in names if conditions[c].get("trajectories")]
    if runs:
        content += _table(
            ("condition (agent runs)", "tool calls / rollout", "tool errors / rollout", "turns / rollout",
             "tokens / rollout", "answered"),
            [(c, f["tool_calls_per_rollout"], f["tool_errors_per_rollout"], f["turns_per_rollout"],
              f["tokens_per_rollout"], f["answered"]) for c, f in runs],
        )  # fmt: skip
    return _section(f"Evaluation ({name})", content)


def _repeat(name: str, result: dict) -> str:
    lifts = result["lifts"]
    names = list(lifts)
    plot = plots.intervals(
        names,
        [lifts[n]["mean"] for n in names],
        [lifts[n]["ci_low"] for n in names],
        [lifts[n]["ci_high"] for n in names],
        "lift over the strongest baseline (t 95% CI across training seeds; x: one training seed)",
        points=[lifts[n]["per_seed"] for n in names],
        zero_line=True,
    )
    rows = [
        (n, lifts[n]["mean"], f"{lifts[n]['ci_low']:+.3f} .. {lifts[n]['ci_high']:+.3f}", lifts[n]["std"])
        for n in names
    ]
    seeds = ", ".join(str(s) for s in result.get("train_seeds", []))
    content = _plot(f"repeat-{_slug(name)}", "Lift across training seeds", plot)
    content += f"<p>Training seeds: {escape(seeds)}.</p>" + _table(("condition", "mean lift", "95% CI", "sd"), rows)
    return _section(f"Training seeds ({name})", content)


def _figure_text(value: dict | None) -> str:
    if not value:
        return "n/a"
    if len(value.get("per_seed", ())) == 1:  # one training seed: no interval
        return f"{value['mean']:+.3f} (one seed)"
    return f"{value['mean']:+.3f} ({value['ci_low']:+.3f} .. {value['ci_high']:+.3f})"


def _continual(name: str, result: dict, title: str | None = None) -> str:
    """A continual run: each condition's accuracy matrix (mean over training seeds) as a heatmap, the mean
    accuracy after each phase with its CI across seeds, and the figures with their CIs."""
    conditions = result["conditions"]
    phases, domains = result["phases"], result["domains"]
    folder = Path(name).parent.name  # results are OUT/continual.json: the folder tells two apart
    slug = _slug(f"{folder}-{Path(name).stem}" if folder else name)
    parts = [
        f"<p>Schedule: {escape(result['schedule'])}; domains in order: {escape(', '.join(domains))}; held-out "
        f"prompts per domain: {escape(json.dumps(result.get('test_prompts', {})))}. Strongest baseline: "
        f"{escape(str(result.get('strongest_baseline')))}. ACC: mean accuracy over every domain after the last "
        "phase; BWT: how much a domain lost after it was learned (negative: forgetting); FWT: what the phases "
        "before a domain did for it (GEM, Lopez-Paz and Ranzato 2017). Each: mean over training seeds with a "
        "t 95% CI across them.</p>"
    ]
    rows = [
        (c, "baseline" if conditions[c]["baseline"] else "library", len(conditions[c]["seeds"]),
         _figure_text(conditions[c]["acc"]), _figure_text(conditions[c]["bwt"]), _figure_text(conditions[c]["fwt"]))
        for c in conditions
    ]  # fmt: skip
    parts.append(_table(("condition", "role", "training seeds", "ACC", "BWT", "FWT"), rows))
    lifts = [(f"{n} - {lift['baseline']}", _figure_text(lift)) for n, lift in result.get("lifts", {}).items()]
    if lifts:
        parts.append(_table(("ACC difference", "mean (t 95% CI across training seeds)"), lifts))
    for key, over in (("seen", "domains learned so far"), ("all", "every domain")):
        series = {
            c: tuple(
                [(v or {}).get(f, float("nan")) for v in conditions[c]["curves"][key]]
                for f in ("mean", "ci_low", "ci_high")
            )
            for c in conditions
            if key in conditions[c].get("curves", {})
        }
        if series:
            parts.append(
                _plot(
                    f"continual-{key}-{slug}",
                    f"Mean accuracy over {over} after each phase",
                    plots.bands(phases, series, "accuracy"),  # type: ignore[arg-type]
                    "band: t 95% CI across training seeds",
                )
            )
    for c in conditions:
        parts.append(
            _plot(
                f"continual-matrix-{_slug(c)}-{slug}",
                f"R[phase][domain] of {c} (mean over {len(conditions[c]['seeds'])} training seed(s))",
                plots.heatmap(conditions[c]["R_mean"], phases, domains, "accuracy"),
            )
        )
    return _section(title or f"Continual ({name})", "\n".join(parts))


def _attribution(name: str, result: dict) -> str:
    lessons = result["lessons"]
    if not lessons:
        return _section(f"Lesson attribution ({name})", "<p>No lessons were attributed.</p>")
    plot = plots.intervals(
        [a["lesson_id"] for a in lessons],
        [a["mean_diff"] for a in lessons],
        [a["ci_low"] for a in lessons],
        [a["ci_high"] for a in lessons],
        "Mean@k with all lessons minus without this one (95% paired bootstrap CI)",
        zero_line=True,
    )
    rows = [
        (a["lesson_id"], a["mean_diff"], f"{a['ci_low']:+.3f} .. {a['ci_high']:+.3f}", a.get("p_holm"), a["text"])
        for a in lessons
    ]
    note = (
        f"<p>v{result['version']}, {result['n_prompts']} prompts, k = {result['k']}; Mean@k with every lesson "
        f"{result['full_mean']:.3f}. Holm p: paired sign-flip test, Holm-corrected over {len(lessons)} lessons.</p>"
    )
    content = _plot(f"attribution-{_slug(name)}", "Per-lesson attribution (forest plot)", plot) + note
    return _section(
        f"Lesson attribution ({name})", content + _table(("lesson", "effect", "95% CI", "Holm p", "text"), rows)
    )


def _history(lessons: dict) -> str:
    items = []
    previous: dict[str, str] = {}
    for version in lessons["history"]:
        after = version.lessons
        diff = [f'<li class="add">+ [{escape(i)}] {escape(t)}</li>' for i, t in after.items() if i not in previous]
        diff += [f'<li class="del">- [{escape(i)}] {escape(t)}</li>' for i, t in previous.items() if i not in after]
        diff += [
            f'<li class="chg">~ [{escape(i)}] <del>{escape(previous[i])}</del> → {escape(t)}</li>'
            for i, t in after.items()
            if i in previous and previous[i] != t
        ]
        ops = [f"<li>{escape(json.dumps(op.to_dict(), ensure_ascii=False))}</li>" for op in version.applied]
        skipped = [f"<li>{escape(json.dumps(s.to_dict(), ensure_ascii=False))}</li>" for s in version.skipped]
        step = "" if version.step is None else f", step {version.step}"
        items.append(
            f"<details{' open' if version.version == lessons['version'] else ''}><summary>v{version.version} "
            f"({escape(version.kind)}{step}): {len(version.applied)} applied, {len(version.skipped)} skipped, "
            f"{len(after)} lessons</summary>"
            f'<h4>diff from the previous version</h4><ul class="diff">{"".join(diff) or "<li>(no change)</li>"}</ul>'
            f"<h4>operations applied</h4><ul>{''.join(ops) or '<li>(none)</li>'}</ul>"
            f"<h4>skipped</h4><ul>{''.join(skipped) or '<li>(none)</li>'}</ul></details>"
        )
        if version.kind != "rejected":
            previous = after
    current = _table(("id", "lesson"), list(lessons["current"].items()))
    return _section("Lessons", f"<h3>Current (v{lessons['version']})</h3>{current}<h3>History</h3>{''.join(items)}")


def _top(experiences: list) -> str:
    top = sorted(experiences, key=lambda e: e.advantage, reverse=True)[:TOP_EXPERIENCES]
    rows = [(f"{e.advantage:.3f}", e.prompt, e.response) for e in top]
    return _section(f"Top {len(top)} experiences by advantage", _table(("advantage", "prompt", "response"), rows))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in Path(name).stem)[:40] or "result"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.8em 0; width: 100%; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; white-space: pre-wrap; }}
figure.plot {{ margin: 1em 0; }} figure.plot svg {{ max-width: 100%; height: auto; }}
figcaption {{ color: #555; font-size: 0.9em; }}
.diff .add {{ color: #176f2c; }} .diff .del {{ color: #a3201d; }} .diff .chg {{ color: #7a5b00; }}
details {{ margin: 0.4em 0; }} summary {{ cursor: pointer; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""
