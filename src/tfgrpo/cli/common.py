"""What several commands share: the library argument, task and model arguments, loading a task,
building a reward and a backend."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError


def library_arg(p: argparse.ArgumentParser, default: str = "library.db", help: str | None = None) -> None:
    p.add_argument("--library", "-l", default=default, help=help or "library file (.db/.sqlite: SQLite; .json)")


def open_library(path: str, must_exist: bool = True):
    """A library from a path: SQLite files are opened write-through, JSON files loaded into memory."""
    from ..core.formats import is_sqlite_path
    from ..core.library import TrainingFreeGRPO
    from ..errors import LibraryNotFoundError

    if must_exist and not os.path.exists(path):
        raise LibraryNotFoundError(f"no library at {path} (train one with `tfgrpo train --library {path}`)")
    if is_sqlite_path(path):
        return TrainingFreeGRPO.open(path)
    grpo = TrainingFreeGRPO()
    if os.path.exists(path):
        grpo.load_from_file(path)
    return grpo


def check_lesson_path(path: str) -> None:
    """Lessons live in SQLite only: refuse a JSON library path before a database is written there."""
    from ..core.formats import is_sqlite_path

    if not is_sqlite_path(path):
        raise ConfigError(f"lessons are kept in an SQLite library (.db, .sqlite); {path} is not one")


def require_lesson_library(path: str) -> None:
    """Refuse a path that is no SQLite file, or that does not exist yet."""
    from ..errors import LibraryNotFoundError

    check_lesson_path(path)
    if not os.path.exists(path):
        raise LibraryNotFoundError(
            f"no library at {path} (train one with `tfgrpo train --strategy lessons --library {path}`)"
        )


def task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default="arithmetic", help="bundled task: arithmetic, humaneval, math")
    g.add_argument(
        "--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option, e.g. difficulty=medium"
    )
    g.add_argument("--data", default=None, help="your dataset (.jsonl, .csv, .parquet) instead of a bundled task")
    g.add_argument("--prompt-field", default="prompt", help="dataset field holding the prompt")
    g.add_argument("--answer-field", default="answer", help="dataset field holding the reference answer")
    g.add_argument(
        "--reward",
        default="numeric",
        help="reward for --data: numeric, exact, math, regex:PATTERN, unittest, compiler",
    )
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out share for --data")
    g.add_argument("--limit", type=int, default=None, help="use at most this many prompts of the split")


def model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default="local",
        help="'local' (bundled SmolLM2-135M-Instruct), 'local:PATH' (model dir or .gguf), "
        "'openai:MODEL@http://host:port/v1' or 'openai' (from OPENAI_BASE_URL, OPENAI_API_KEY, TFGRPO_MODEL)",
    )
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=False, help="send chat messages")
    g.add_argument("--concurrency", type=int, default=16, help="parallel requests (HTTP backends)")


class Given(argparse.Action):
    """Stores the value and notes that the flag was given, so a --preset fills only the others."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        given = set(getattr(namespace, "given", None) or ())
        namespace.given = given | {self.dest}


def rollout_args(p: argparse.ArgumentParser, temperature: float, given: bool = False) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--shots", type=int, default=3, help="few-shot examples from the library per prompt")
    g.add_argument(
        "--select", choices=["sample", "retrieve"], default="sample", help="examples drawn by advantage or retrieved"
    )
    g.add_argument(
        "--retrieval-mode", choices=["lexical", "semantic", "hybrid"], default="semantic", help="with --select retrieve"
    )
    g.add_argument("--token-budget", type=int, default=512, help="most tokens the examples may take")
    g.add_argument("--temperature", type=float, default=temperature, **({"action": Given} if given else {}))
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-tokens", type=int, default=None, help="default: the task's hint")
    g.add_argument(
        "--stop",
        action="append",
        default=None,
        help="stop string (repeatable; default: the task's: a newline for arithmetic and --data, a new 'Q:' line "
        "for humaneval and math)",
    )
    g.add_argument("--instruction", default=None, help="instruction before the examples (default: the task's)")


class LoadedTask(NamedTuple):
    """A task's samples and reward, and its generation hints (instruction, max_tokens, stop), which
    apply where the flags do not say otherwise."""

    name: str
    train: list[dict]
    test: list[dict]
    reward: object
    instruction: str
    max_tokens: int
    stop: tuple[str, ...]


def load_task(args) -> LoadedTask:
    """The bundled task or --data file named by the flags, split and limited."""
    from ..tasks import get_task, load_samples, split

    if args.data:
        samples = load_samples(args.data, prompt_field=args.prompt_field, answer_field=args.answer_field)
        train, test = split(samples, args.test_fraction, seed=0)
        loaded = LoadedTask(Path(args.data).stem, train, test, make_reward(args.reward), "", 256, ("\n",))
    else:
        options = dict(_parse_option(item) for item in args.task_option)
        task = get_task(args.task, **options)
        loaded = LoadedTask(
            task.name,
            task.load("train"),
            task.load("test"),
            task.reward,
            task.instruction,
            task.max_tokens,
            task.stop,
        )
    if args.limit:
        loaded = loaded._replace(train=loaded.train[: args.limit], test=loaded.test[: args.limit])
    return loaded


def make_reward(spec: str):
    from .. import rewards

    kind, _, arg = spec.partition(":")
    simple = {
        "numeric": rewards.NumericMatchReward,
        "exact": rewards.ExactMatchReward,
        "math": rewards.MathReward,
        "unittest": rewards.UnitTestReward,
        "compiler": rewards.CompilerReward,
    }
    if kind == "regex" and arg:
        return rewards.RegexReward(arg)
    if kind in simple and not arg:
        return simple[kind]()
    raise ConfigError(f"unknown reward {spec!r}; use numeric, exact, math, regex:PATTERN, unittest or compiler")


def _parse_option(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"--task-option takes KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def make_backend(spec: str, concurrency: int):
    """The backend a spec names; `concurrency` applies to HTTP backends."""
    from ..llm import get_backend

    kwargs = {"concurrency": concurrency} if spec.startswith(("openai", "http")) else {}
    return get_backend(spec, **kwargs)


def rollout_settings(args, task: LoadedTask) -> dict:
    from ..prompting import PromptTemplate

    return {
        "shots": args.shots,
        "select": args.select,
        "retrieval_mode": args.retrieval_mode,
        "token_budget": args.token_budget,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens or task.max_tokens,
        "stop": tuple(args.stop) if args.stop is not None else task.stop,
        "template": PromptTemplate(
            instruction=args.instruction if args.instruction is not None else task.instruction or None
        ),
        "chat": args.chat,
    }
