"""`tfgrpo serve` learning from agents: the turns of one agent run carry `"tfgrpo": {"trajectory": ID}`;
one reward posted for the run scores every turn, and the run itself (its task, its transcript) joins the
runs of the same task in a group the library learns from, as n = 1 completions do. Real proxy (uvicorn on
127.0.0.1) in front of a scripted model; the official openai client sends the runs."""

import json
import sqlite3

import httpx
import pytest

from support.agents import Model, tool_reply
from support.llm import StandIn, UvicornThread
from tfgrpo import TrainingFreeGRPO
from tfgrpo.prompting import trajectory_of
from tfgrpo.server.config import ProxyConfig
from tfgrpo.server.proxy import create_proxy_app

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

TASK = "What is 48213 * 9127?"


def agent_run(client, run_id, right: bool, task=TASK):
    """Two turns of a native tool-calling agent: a call to `python`, then the answer."""
    messages = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": task}]
    extra = {"tfgrpo": {"trajectory": run_id}}
    first = client.chat.completions.create(model="m", messages=messages, extra_body=extra)
    call = first.choices[0].message.tool_calls[0]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "440040051" if right else "0"},
    ]
    second = client.chat.completions.create(model="m", messages=messages, extra_body=extra)
    return [first.id, second.id], second.choices[0].message.content


def upstream_answer(messages, body):
    done = [m for m in messages if m["role"] == "tool"]
    if not done:
        return tool_reply([("python", json.dumps({"code": "print(48213 * 9127)"}))])
    return f"The answer is {done[-1]['content']}"


def test_one_reward_per_run_scores_every_turn_and_the_library_learns_the_run(tmp_path):
    path = tmp_path / "lib.db"
    model = Model(upstream_answer)
    with StandIn(model) as upstream:
        app = create_proxy_app(upstream.url, {"lib": path}, ProxyConfig(group_size=2, shots=1, min_relevance=0.0))
        with UvicornThread(app) as proxy:
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0)
            good_ids, good = agent_run(client, "run-good", right=True)
            bad_ids, bad = agent_run(client, "run-bad", right=False)
            assert good == "The answer is 440040051" and bad == "The answer is 0"
            post = lambda body: httpx.post(f"{proxy.url}/v1/feedback", json=body, timeout=30)  # noqa: E731
            first = post({"trajectory": "run-good", "reward": 1.0})
            assert first.status_code == 200 and first.json()["groups"] == []
            second = post({"trajectory": "run-bad", "reward": 0.0})
            assert second.status_code == 200 and second.json()["groups"] == [1]
            assert post({"trajectory": "run-bad", "reward": 0.0}).json()["duplicates"] == 1  # the same again
            assert post({"trajectory": "run-bad", "reward": 1.0}).status_code == 409  # a different reward
            missing = post({"trajectory": "never-served", "reward": 1.0})
            assert missing.status_code == 404 and missing.json()["error"]["param"] == "trajectory"
            assert post({"trajectory": "run-good", "id": "x", "reward": 1.0}).status_code == 400
            # A run of a like task is served the learned run as its example, in the task's message.
            agent_run(client, "run-third", right=True, task="What is 48213 * 9128?")
    with sqlite3.connect(path) as db:
        rewards = dict(db.execute("SELECT completion_id, reward FROM proxy_feedback"))
    assert [rewards[c] for c in good_ids + bad_ids] == [1.0, 1.0, 0.0, 0.0]  # every turn scored
    assert rewards["trajectory-run-good"] == 1.0 and len(rewards) == 6
    with TrainingFreeGRPO.open(path) as grpo:
        (stored,) = grpo.experience_library
    assert stored.prompt == TASK and stored.advantage > 0
    assert "```tool" in stored.response and "Output:\n```\n440040051\n```" in stored.response
    assert stored.response.endswith("The answer is 440040051")
    assert trajectory_of(stored) is None  # serve keeps the transcript, not the run's messages
    third = model.bodies[-2]["messages"]
    task_message = next(m for m in third if m["role"] == "user")
    assert "Output:\n```\n440040051\n```" in task_message["content"]
    assert task_message["content"].endswith("Q: What is 48213 * 9128?\nA:")
    assert model.bodies[-1]["messages"][-1]["role"] == "tool"  # later turns keep their own messages as sent
