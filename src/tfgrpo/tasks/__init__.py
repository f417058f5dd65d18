"""Tasks (samples + reward + generation hints) and dataset loading. Bundled: `arithmetic` (its `large`
difficulty needs a calculator), `humaneval`, `math` (your own file) and `math-tool` (bundled problems that
need computation) and `multidomain` (five small domains, each with its own answer convention, for continual
learning). `get_task(name, **options)` builds one."""

from .arithmetic import arithmetic_task, generate_arithmetic
from .dataset import DatasetError, DatasetNotFoundError, load_samples, split
from .humaneval import humaneval_task, load_humaneval
from .math_task import math_task
from .math_tool import generate_math_tool, math_tool_task
from .multidomain import DOMAINS, generate_domain, multidomain_task
from .task import Task, get_task, list_tasks, register_task

register_task("arithmetic", arithmetic_task)
register_task("humaneval", humaneval_task)
register_task("math", math_task)
register_task("math-tool", math_tool_task)
register_task("multidomain", multidomain_task)

__all__ = [
    "DOMAINS",
    "DatasetError",
    "DatasetNotFoundError",
    "Task",
    "arithmetic_task",
    "generate_arithmetic",
    "generate_domain",
    "generate_math_tool",
    "get_task",
    "humaneval_task",
    "list_tasks",
    "load_humaneval",
    "load_samples",
    "math_task",
    "math_tool_task",
    "multidomain_task",
    "register_task",
    "split",
]
