"""Where the work tfgrpo runs itself goes: local model rollouts and rewards, in this process or on a Ray
cluster (`ExecutorConfig.executor`). Ray is imported only when asked for (`pip install 'tfgrpo[ray]'`).

    from tfgrpo.executors import ExecutorConfig, open_executor

    with open_executor(ExecutorConfig(executor="ray", replicas=2)) as executor:
        policy, reward = executor.backend("local"), executor.reward(task.reward)
        train(policy, samples, reward, updates, config)      # the same library as without Ray
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import BackendSpec, Executor, LocalExecutor
from .config import ExecutorConfig

__all__ = ["BackendSpec", "Executor", "ExecutorConfig", "LocalExecutor", "open_executor"]


def open_executor(config: ExecutorConfig | None = None) -> Executor:
    """The executor `config.executor` names (Ray is started or joined here)."""
    config = config or ExecutorConfig()
    if config.ray_address() is None:
        return LocalExecutor(config)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"--executor {config.executor} needs Ray, which is not installed: pip install 'tfgrpo[ray]' "
            "(or pip install 'ray[default]')"
        ) from None
    from .ray_executor import RayExecutor

    return RayExecutor(config)
