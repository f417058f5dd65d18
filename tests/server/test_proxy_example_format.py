"""`tfgrpo serve --example-format turns` and `--advantage-weight`: the proxy puts experiences into a chat
request the way training and `tfgrpo eval` put them into a prompt (the same functions, the same knobs)."""

from __future__ import annotations

import dataclasses

import pytest

from support.proxy import Proxy, chat
from tfgrpo.core.library import TrainingFreeGRPO
from tfgrpo.errors import ConfigError
from tfgrpo.server.config import ProxyConfig

QUERY = "What is 9 + 18?"


@pytest.fixture
def library(fresh, tmp_path):
    path = tmp_path / "lib.db"
    with TrainingFreeGRPO.open(path) as grpo:
        # Relevant to QUERY with advantage 0.5; barely relevant with advantage 0.75.
        grpo.add_rollout_group([("What is 9 + 17?", "9 + 17 = 26"), ("What is 9 + 17?", "3")], [1, 0])
        grpo.add_rollout_group([("What is 2 + 5?", "7")] + [("What is 2 + 5?", "1")] * 3, [1, 0, 0, 0])
    return path


def test_turns_put_each_experience_in_as_a_user_and_an_assistant_message(upstream, library):
    system = {"role": "system", "content": "Reply with one number."}
    config = ProxyConfig(shots=1, example_format="turns")
    with Proxy(upstream, library, config) as proxy, proxy.client() as client:
        client.chat.completions.create(
            model="scripted", messages=[system, {"role": "user", "content": QUERY}], max_tokens=5
        )
    assert upstream.bodies[-1]["messages"] == [
        system,
        {"role": "user", "content": "Q: What is 9 + 17?\nA:"},
        {"role": "assistant", "content": "9 + 17 = 26"},
        {"role": "user", "content": f"Q: {QUERY}\nA:"},
    ]
    # The default is the text pairs inside the user message, as before.
    with Proxy(upstream, library, ProxyConfig(shots=1)) as proxy, proxy.client() as client:
        chat(client, QUERY)
    assert upstream.bodies[-1]["messages"] == [
        {"role": "user", "content": f"Q: What is 9 + 17?\nA: 9 + 17 = 26\n\nQ: {QUERY}\nA:"}
    ]


def test_advantage_weight_trades_relevance_for_advantage(upstream, library):
    for weight, shown in ((0.0, "9 + 17 = 26"), (1.0, "A: 7")):
        # (min_relevance 0: the barely relevant experience must stay a candidate)
        with Proxy(upstream, library, ProxyConfig(shots=1, advantage_weight=weight, min_relevance=0.0)) as proxy:
            with proxy.client() as client:
                chat(client, QUERY)
        assert shown in upstream.bodies[-1]["messages"][-1]["content"]
    with pytest.raises(ConfigError, match="example_format"):
        ProxyConfig(example_format="pairs")


def test_the_lessons_validation_prompts_as_serving_does():
    from tfgrpo.learn.rollouts import PromptingConfig
    from tfgrpo.rewards import ExactMatchReward
    from tfgrpo.server.proxy import online_lessons

    config = ProxyConfig(shots=2, example_format="turns", contrast=True, advantage_weight=0.5, token_budget=300)
    lessons = online_lessons("http://127.0.0.1:9/v1", "m", None, None, 0.0, ExactMatchReward(), config)
    rollouts = lessons.rollouts
    for name in (f.name for f in dataclasses.fields(PromptingConfig)):
        assert getattr(rollouts.config, name) == getattr(config, name), name
    assert rollouts.group_size == config.group_size
    assert online_lessons("http://127.0.0.1:9/v1", "m", None, None, None, None, config).rollouts is None
    for backend in lessons.backends:
        backend.close()
