"""Reward functions: one interface (`Reward`: `reward(prompt, response, sample) -> float`, with
`score`, `score_batch` and `ascore`), compiler feedback, unit tests in a sandbox, answer matching
and an LLM judge."""

from .base import FunctionReward, Reward, RewardError, Score
from .compiler import CompileResult, CompilerFeedback, CompilerReward
from .math_reward import ExactMatchReward, JudgeReward, MathReward, NumericMatchReward, RegexReward
from .sandbox import SandboxConfig, SandboxError, SandboxResult, run_python
from .specs import get_reward
from .text import extract_code, extract_last_number
from .unittest_reward import UnitTestReward

__all__ = [
    "CompileResult",
    "CompilerFeedback",
    "CompilerReward",
    "ExactMatchReward",
    "FunctionReward",
    "JudgeReward",
    "MathReward",
    "NumericMatchReward",
    "RegexReward",
    "Reward",
    "RewardError",
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "Score",
    "UnitTestReward",
    "extract_code",
    "extract_last_number",
    "get_reward",
    "run_python",
]
