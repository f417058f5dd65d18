"""react-python end to end on the bundled model (SmolLM2-135M on CPU), on small sizes: a training step
whose rollouts are trajectories (the model's own turns, any code it writes run in the sandbox), scored,
learned and counted."""

import pytest

from tfgrpo import TrainingFreeGRPO
from tfgrpo.agents import AgentConfig, react_python
from tfgrpo.learn import ExampleUpdate
from tfgrpo.loop import TrainConfig, run_step
from tfgrpo.prompting import PromptTemplate
from tfgrpo.rewards import NumericMatchReward
from tfgrpo.tasks import get_task

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_a_react_python_step_on_the_bundled_model(local_backend, tmp_path):
    task = get_task("arithmetic", difficulty="large", n=10)
    samples = task.load("train")[:2]
    config = TrainConfig(
        batch_size=2,
        group_size=2,
        shots=0,
        max_tokens=48,
        temperature=0.7,
        template=PromptTemplate(instruction=task.instruction),
    )
    with TrainingFreeGRPO.open(tmp_path / "lib.db") as grpo, react_python(AgentConfig(max_turns=2)) as agent:
        metrics = run_step(local_backend, samples, NumericMatchReward(), [ExampleUpdate(grpo)], config, agent=agent)
    figures = metrics.trajectories
    assert figures["rollouts"] == 4 and 1 <= figures["turns_per_rollout"] <= 2
    assert sum(figures["endings"].values()) == 4 and set(figures["endings"]) <= {"answer", "max_turns", "tool_errors"}
    assert metrics.completion_tokens > 0 and metrics.llm_requests >= 4
