"""What several commands share: the library argument, task and model arguments, loading a task,
building a reward and a backend."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..core.knobs import MAX_RUN_SEED
from ..core.store import is_postgres_url, shown_target
from ..errors import ConfigError

DATA_TEST_FRACTION = 0.2
"""The held-out share of a --data file split here (without --eval-data)."""

if TYPE_CHECKING:
    from ..executors import Executor
    from ..rewards import Reward


def library_arg(p: argparse.ArgumentParser, default: str = "library.db", help: str | None = None) -> None:
    p.add_argument(
        "--library",
        "-l",
        default=default,
        help=help
        or "library: an SQLite file (.db/.sqlite), a postgresql:// URL (?schema=NAME: one of several "
        "libraries in a database), or a .json file",
    )


def _whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    said = f"a whole number >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{said}, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f"{said}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count)."""
    return _whole_number(text, 1)


def seed_value(text: str) -> int:
    """An argparse type: a seed, a whole number >= 0 (checked before any work, not at the first sample)."""
    return _whole_number(text, 0, MAX_RUN_SEED)


def version_number(text: str) -> int:
    """An argparse type: a library's or lessons' version, a whole number a database column holds."""
    return _whole_number(text, 0, 2**63 - 1)


def port_number(text: str) -> int:
    """An argparse type: a TCP port to listen on, 1 to 65535 (refused before a model loads or a socket opens)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536):
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, got {text!r}")
    return int(text)


def share(text: str) -> float:
    """An argparse type: a share from 0 to 1 (0: all of it on one side, as train on a whole file)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # also NaN
        raise argparse.ArgumentTypeError(f"a number from 0 to 1, got {text!r}")
    return value


share.takes = float  # type: ignore[attr-defined]  # what a config file gives it (see options._coerce_one)


def check_output(out: str | os.PathLike | None, flag: str, *inputs: str | os.PathLike | None) -> None:
    """Refuse an output file that is one of the command's inputs (a library, a dataset, a result): it
    would be written over what it was made from."""
    if out is None:
        return
    target = Path(out).resolve()
    for given in inputs:
        if given is not None and not is_postgres_url(given):
            if Path(given).resolve() == target:
                raise ConfigError(f"{flag} {out} is one of this command's inputs; write to another file")


def capacity_args(p: argparse.ArgumentParser) -> None:
    """`--max-library-size` and `--eviction-policy`: the capacity of a library the command creates."""
    p.add_argument("--max-library-size", type=int, default=None, help="library capacity (new libraries)")
    p.add_argument(
        "--eviction-policy",
        choices=["lowest_advantage", "oldest", "balanced"],
        default=None,
        help="what goes when the library is full (new libraries; balanced: the lowest advantage of the domain "
        "that holds the most, so every domain keeps its share)",
    )


def new_library_config(args, **changes):
    """The GRPOConfig of a library the command creates: the defaults, `changes`, then --max-library-size and
    --eviction-policy; checked at once, so a bad value is refused before any work."""
    from ..core.config import GRPOConfig

    if getattr(args, "max_library_size", None) is not None:
        changes["max_library_size"] = args.max_library_size
    if getattr(args, "eviction_policy", None):
        changes["eviction_policy"] = args.eviction_policy
    return GRPOConfig().replace(**changes)


def creating(path: str, new_config, args):
    """`new_config` for a library this command creates at `path`; None (its own, kept) for one that exists,
    with a warning where --max-library-size or --eviction-policy asked for another."""
    import warnings

    from ..core.store import store_exists
    from ..errors import TFGRPOWarning

    if not store_exists(path):
        return new_config
    if getattr(args, "max_library_size", None) is not None or getattr(args, "eviction_policy", None):
        warnings.warn(
            f"{shown_target(path)} exists: it keeps its own capacity and eviction policy "
            "(--max-library-size and --eviction-policy shape a library the command creates)",
            TFGRPOWarning,
            stacklevel=2,
        )
    return None


def open_library(path: str, must_exist: bool = True):
    """A library from a path or URL: SQLite files and PostgreSQL URLs are opened write-through, JSON
    files loaded into memory."""
    from ..core.library import TrainingFreeGRPO
    from ..core.store import is_store_target, store_exists
    from ..errors import LibraryNotFoundError

    if must_exist and not store_exists(path):
        shown = shown_target(path)
        raise LibraryNotFoundError(f"no library at {shown} (train one with `tfgrpo train --library {shown}`)")
    if is_store_target(path):
        return TrainingFreeGRPO.open(path)
    grpo = TrainingFreeGRPO()
    if os.path.exists(path):
        grpo.load_from_file(path)
    return grpo


def check_lesson_path(path: str) -> None:
    """Lessons live in a database only: refuse a JSON library path before a database is written there."""
    from ..core.store import is_store_target

    if not is_store_target(path):
        raise ConfigError(
            f"lessons are kept in an SQLite library (.db, .sqlite) or a postgresql:// database; {path} is neither"
        )


def require_lesson_library(path: str) -> None:
    """Refuse a path that is no database, or where there is nothing yet."""
    from ..core.store import store_exists
    from ..errors import LibraryNotFoundError

    check_lesson_path(path)
    if not store_exists(path):
        shown = shown_target(path)
        raise LibraryNotFoundError(
            f"no library at {shown} (train one with `tfgrpo train --strategy lessons --library {shown}`)"
        )


def task_args(p: argparse.ArgumentParser, default: str = "arithmetic") -> None:
    g = p.add_argument_group("task")
    g.add_argument(
        "--task",
        default=default,
        help="bundled task (arithmetic, humaneval, math, math-tool, multidomain) or your own factory returning a "
        "tfgrpo.tasks.Task: module:function or path/to/file.py:function (called with the --task-option values)",
    )
    g.add_argument(
        "--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option, e.g. difficulty=medium"
    )
    g.add_argument("--data", default=None, help="your dataset (.jsonl, .csv, .parquet) instead of a task")
    g.add_argument("--prompt-field", default="prompt", help="dataset field holding the prompt")
    g.add_argument("--answer-field", default="answer", help="dataset field holding the reference answer")
    g.add_argument(
        "--reward",
        default=None,
        help="numeric, exact, math, regex:PATTERN, unittest, compiler, or your own: module:name or "
        "path/to/file.py:name naming a Reward (instance or class) or a function (prompt, response, sample) -> "
        "float (default: numeric for --data, the task's own reward for a task)",
    )
    g.add_argument(
        "--test-fraction",
        type=share,
        default=None,
        help=f"held-out share of --data without --eval-data (default: {DATA_TEST_FRACTION}); a task splits its own "
        "samples (--task-option test_fraction=X where the task takes it)",
    )
    g.add_argument(
        "--eval-data",
        default=None,
        metavar="FILE",
        help="your held-out file (same fields as --data): eval and attribute use it instead of the split, and "
        "train then uses all of --data",
    )
    g.add_argument("--limit", type=positive_int, default=None, help="use at most this many prompts of each side")
    g.add_argument(
        "--allow-unsandboxed",
        action="store_true",
        help="run generated code (unittest reward, humaneval) even where the sandbox cannot create its namespaces: "
        "then without network or file-system isolation. Without this flag such a machine refuses to score",
    )
    g.add_argument(
        "--instruction", default=None, help="instruction before the examples and the query (default: the task's)"
    )


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="local",
        help="'local' (bundled SmolLM2-135M-Instruct), 'local:PATH' (model dir or .gguf), "
        "'openai:MODEL@http://host:port/v1' or 'openai' (from OPENAI_BASE_URL, OPENAI_API_KEY, TFGRPO_MODEL)",
    )


class LoadedTask(NamedTuple):
    """A task's samples and reward, its generation hints (instruction, max_tokens, stop), which apply
    where neither a flag nor the config file says otherwise, and `run`: what names the data, for the
    resume check (data, split, eval_data)."""

    name: str
    train: list[dict]
    test: list[dict]
    reward: Reward
    instruction: str
    max_tokens: int
    stop: tuple[str, ...]
    run: dict


def load_task(args, with_samples: bool = True) -> LoadedTask:
    """The task or --data file named by the flags, split (or with --eval-data as its held-out side)
    and limited. `with_samples=False` (`--print-config`) reads no file and makes no samples: the task's
    settings alone."""
    from ..rewards import get_reward
    from ..tasks import load_samples, split
    from .specs import load_task_spec

    def read(path: str) -> list[dict]:
        if not with_samples:
            return []
        return load_samples(path, prompt_field=args.prompt_field, answer_field=args.answer_field)

    eval_data = str(Path(args.eval_data).resolve()) if args.eval_data else None
    if args.test_fraction is not None and (eval_data or not args.data):
        raise ConfigError(
            "--test-fraction splits --data without --eval-data"
            + (
                ": --eval-data is the held-out side"
                if eval_data
                else "; a task splits its own samples (--task-option test_fraction=X where the task takes it)"
            )
        )
    if args.data:
        samples = read(args.data)
        if eval_data:
            train, test, fraction = samples, read(args.eval_data), None
        else:
            fraction = args.test_fraction or DATA_TEST_FRACTION
            train, test = split(samples, fraction, seed=0)
        run = {"data": str(Path(args.data).resolve()), "split": fraction, "eval_data": eval_data}
        reward = get_reward(args.reward or "numeric", allow_unsandboxed=args.allow_unsandboxed)
        loaded = LoadedTask(Path(args.data).stem, train, test, reward, "", 256, ("\n",), run)
    else:
        options = dict(_parse_option(item) for item in args.task_option)
        task = load_task_spec(args.task, options, allow_unsandboxed=args.allow_unsandboxed)
        if not with_samples:
            train, test = [], []
        elif eval_data:
            train, test = task.load("all"), read(args.eval_data)
        else:
            train, test = task.load("train"), task.load("test")
        run = {
            "data": args.task if not options else f"{args.task} {json.dumps(options, sort_keys=True)}",
            "split": None if eval_data else task.test_fraction,
            "eval_data": eval_data,
        }
        reward = get_reward(args.reward, allow_unsandboxed=args.allow_unsandboxed) if args.reward else task.reward
        loaded = LoadedTask(task.name, train, test, reward, task.instruction, task.max_tokens, task.stop, run)
    if args.limit:
        loaded = loaded._replace(train=loaded.train[: args.limit], test=loaded.test[: args.limit])
    return loaded


def _parse_option(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"--task-option takes KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def make_backend(spec: str, concurrency: int, executor: Executor | None = None):
    """The backend a spec names, made where `executor` runs models (default: in this process);
    `concurrency` applies to HTTP backends."""
    if executor is not None:
        return executor.backend(spec, concurrency=concurrency)
    from ..llm import get_backend

    kwargs = {"concurrency": concurrency} if spec.startswith(("openai", "http")) else {}
    return get_backend(spec, **kwargs)


def executor_args(p: argparse.ArgumentParser, only: list[str] | None = None) -> None:
    """The `ExecutorConfig` flags (--executor, --replicas, ...), or those in `only`."""
    from ..executors import ExecutorConfig
    from .options import add_config_args

    add_config_args(p.add_argument_group("where work runs (ExecutorConfig)"), ExecutorConfig, only=only)


def open_executor_of(args) -> Executor:
    """The executor the flags name (Ray started or joined here); close it, or use it with `with`."""
    from ..executors import ExecutorConfig, open_executor
    from .options import config_from_args

    return open_executor(config_from_args(ExecutorConfig, args))


def task_hints(task: LoadedTask) -> dict:
    """The task's generation hints, for the fields that neither a flag nor the config file set."""
    return {"max_tokens": task.max_tokens, "stop": task.stop}


HINTED = {"max_tokens": "the task's hint, 256 for --data", "stop": "the task's, a newline for --data"}
"""The defaults of the fields `task_hints` sets, as the help says them."""


def template(args, task: LoadedTask):
    """The prompt template: --instruction (flag or config file), else the task's instruction."""
    from ..prompting import PromptTemplate

    return PromptTemplate(instruction=args.instruction if args.instruction is not None else task.instruction or None)


def agent_args(p: argparse.ArgumentParser) -> None:
    """`--agent SPEC` and the agent's knobs (`AgentConfig`)."""
    from ..agents import AgentConfig
    from .options import add_config_args
    from .specs import AGENT_SPECS

    g = p.add_argument_group("agent (each rollout a trajectory of many turns with tool calls)")
    g.add_argument(
        "--agent",
        default=None,
        metavar="SPEC",
        help=f"run each rollout as an agent: {AGENT_SPECS} (default: one completion per rollout; --max-tokens "
        "then bounds each turn)",
    )
    add_config_args(g, AgentConfig)


def open_agent(args, stack):
    """The agent --agent names (opened on `stack`, closed with it), or None."""
    if not getattr(args, "agent", None):
        return None
    from ..agents import AgentConfig
    from .options import config_from_args
    from .specs import make_agent

    agent = make_agent(args.agent, config_from_args(AgentConfig, args), allow_unsandboxed=args.allow_unsandboxed)
    return stack.enter_context(agent)


def rollout_log_args(p: argparse.ArgumentParser) -> None:
    """`--no-rollout-log` and `--rollout-log-days` (`RolloutLogConfig`)."""
    from ..learn.rollout_log import RolloutLogConfig
    from .options import add_config_args

    add_config_args(p.add_argument_group("rollout log (RolloutLogConfig)"), RolloutLogConfig)


def open_rollout_log(args, library: str, stack):
    """The rollout log of `library` (opened on `stack`), or None with --no-rollout-log or for a library
    that is no database (a .json file: said once on stderr)."""
    import sys

    from ..core.store import is_store_target
    from ..learn.rollout_log import RolloutLog, RolloutLogConfig
    from .options import config_from_args

    config = config_from_args(RolloutLogConfig, args)
    if not config.rollout_log:
        return None
    if not is_store_target(library):
        print(
            f"note: rollouts are logged in SQLite or PostgreSQL libraries; {library} is neither, so they are not",
            file=sys.stderr,
        )
        return None
    return stack.enter_context(RolloutLog(library, retention_days=config.rollout_log_days))
