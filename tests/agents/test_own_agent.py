"""`--agent module:factory`: your own agent object, here the worked example of examples/ (a smolagents
CodeAgent), driven by a scripted model over real HTTP; its runs come back as trajectories that the step
scores on their final answer and learns from."""

import sys
from pathlib import Path

import pytest

from support.agents import Model, serve
from tfgrpo import TrainingFreeGRPO
from tfgrpo.agents import AgentConfig
from tfgrpo.cli.specs import make_agent
from tfgrpo.learn import ExampleUpdate
from tfgrpo.loop import TrainConfig, run_step
from tfgrpo.rewards import NumericMatchReward

pytest.importorskip("smolagents")
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "smolagents_agent.py"


def test_a_smolagents_code_agent_through_the_factory_spec(tmp_path):
    def answer(messages, body):
        assert messages[0]["role"] == "system" and "multiply" in messages[0]["content"]  # smolagents' own prompt
        observed = [m["content"] for m in messages if m["role"] == "user" and "Execution logs" in m["content"]]
        if not observed:
            return "Thought: use the tool.\n<code>\nresult = multiply(a=123456789, b=987654321)\nprint(result)\n</code>"
        number = observed[-1].split("Execution logs:\n")[1].split()[0]
        wrong = "7" if "wrong" in messages[1]["content"] else number
        return f"Thought: done.\n<code>\nfinal_answer({wrong})\n</code>"

    samples = [
        {"id": "a", "prompt": "What is 123456789 * 987654321?", "answer": 123456789 * 987654321},
        {"id": "b", "prompt": "What is 123456789 * 987654321, wrong?", "answer": 123456789 * 987654321},
    ]
    model = Model(answer)
    with serve(model) as llm, make_agent(f"{EXAMPLE}:make_agent", AgentConfig(max_turns=3)) as agent:
        assert agent.name == "smolagents-code" and agent.config.max_turns == 3
        with TrainingFreeGRPO.open(tmp_path / "lib.db") as grpo:
            config = TrainConfig(batch_size=2, group_size=2, shots=0, max_tokens=64)
            metrics = run_step(llm, samples, NumericMatchReward(), [ExampleUpdate(grpo)], config, agent=agent)
    assert metrics.reward_mean == 0.5 and metrics.trajectories["tool_calls_per_rollout"] == 2.0
    assert metrics.trajectories["endings"] == {"answer": 4}
    # smolagents sent the stop sequences of its protocol; tfgrpo's sampling (its seed) went with them.
    assert any("</code>" in (b.get("stop") or []) for b in model.bodies)
    assert all(isinstance(b.get("seed"), int) for b in model.bodies)
    assert sys.modules  # the example imported as a file, by path
