"""`react-python` and your own tools through a scripted model over real HTTP: the text protocol (fenced
blocks, results fed back as the next message) and native OpenAI tool calls; state kept across the turns of
one trajectory; every fault (a tool that hangs, crashes, prints megabytes or raises; a model that never
stops calling tools, names a tool that does not exist, sends malformed arguments or fails) ends the
trajectory with a reason or is shown to the model, and the batch goes on."""

import asyncio
import time

import pytest

from support.agents import Model, as_json, context, last_user, serve, tool_reply
from support.llm import error_reply
from tfgrpo import ExampleUpdate, TrainConfig, TrainingFreeGRPO, train
from tfgrpo.agents import AgentConfig, FunctionTool, ToolAgent, react_python
from tfgrpo.agents.react import cut_outside_code, parse_text_turn
from tfgrpo.errors import BackendError, ConfigError
from tfgrpo.learn import rollout_batch
from tfgrpo.learn.rollouts import RolloutConfig
from tfgrpo.rewards import NumericMatchReward

pytestmark = pytest.mark.slow

PRODUCT = 123456789 * 987654321


def run(agent, ctx, sample=None):
    with agent:
        return agent.run_many([(sample or {"id": "s", "prompt": "q"}, ctx)])[0]


def test_text_protocol_runs_the_code_in_the_sandbox_and_feeds_the_output_back():
    def answer(messages, body):
        assert "stop" not in body and "tools" not in body  # no stop string can cut a code block
        if "Output:" in last_user(messages):
            return f"The product is {last_user(messages).split()[2]}."
        # The model goes on past its block, guessing an output: that part is dropped, the code runs.
        return "I will compute it.\n```python\nx = 123456789\nprint(x * 987654321)\n```\nOutput:\n```\n5\n```\nSo 5."

    model = Model(answer)
    llm_cm = serve(model)
    with llm_cm as llm:
        trajectory = run(react_python(), context(llm, stop=("\n",)))
    assert trajectory.ended == "answer" and trajectory.answer == f"The product is {PRODUCT}."
    assert (trajectory.turns, trajectory.tool_calls, trajectory.tool_errors) == (2, 1, 0)
    assert trajectory.messages[0].content.endswith("print(x * 987654321)\n```")  # cut after its block
    assert trajectory.messages[1].content == str(PRODUCT)
    second = model.bodies[1]["messages"]
    assert second[0]["role"] == "system" and "```python block" in second[0]["content"]
    assert second[-1] == {"role": "user", "content": f"Output:\n```\n{PRODUCT}\n```"}
    assert second[-2]["content"].endswith("```") and "So 5" not in second[-2]["content"]
    assert trajectory.prompt_tokens == 20 and trajectory.completion_tokens == 10  # both turns counted
    assert trajectory.text.count("```python") == 1 and f"Output:\n```\n{PRODUCT}\n```" in trajectory.text


def test_variables_live_across_the_turns_of_one_trajectory_and_not_beyond():
    def answer(messages, body):
        results = [
            m["content"] for m in messages if m["role"] == "user" and m["content"].startswith(("Output", "Error"))
        ]
        if not results:
            return "```python\nsecret = 6 * 7\n```"
        if len(results) == 1:
            return "```python\nprint(secret)\n```"
        return f"Done: {results[-1]}"

    llm_cm = serve(Model(answer))
    agent = react_python()
    with llm_cm as llm, agent:
        first, second = agent.run_many([({"prompt": "a"}, context(llm)), ({"prompt": "b"}, context(llm))])
    for trajectory in (first, second):
        assert trajectory.messages[3].content == "42" and not trajectory.messages[3].error


def test_native_tool_calls_and_their_faults():
    def add(a: int, b: int) -> int:
        """Add two whole numbers.

        Args:
            a: the first
            b: the second
        """
        return a + b

    def boom(text: str) -> str:
        """Always fails."""
        raise RuntimeError("the tool broke: " + text)

    def answer(messages, body):
        tools = {t["function"]["name"]: t["function"] for t in body["tools"]}
        assert tools["add"]["parameters"]["properties"]["a"] == {"type": "integer", "description": "the first"}
        assert tools["add"]["description"] == "Add two whole numbers."
        results = [m for m in messages if m["role"] == "tool"]
        if not results:
            return tool_reply(
                [
                    ("add", as_json({"a": 2, "b": 40})),
                    ("nope", "{}"),
                    ("add", "{not json"),
                    ("add", '{"a": "x", "b": 1}'),
                ]
            )
        if len(results) == 4:
            return tool_reply([("boom", as_json({"text": "hi"}))], text="trying boom")
        return f"The sum is {results[0]['content']}."

    model = Model(answer)
    llm_cm = serve(model, tool_calls=True)
    agent = ToolAgent([FunctionTool(add), FunctionTool(boom)], AgentConfig(max_tool_errors=10))
    with llm_cm as llm:
        trajectory = run(agent, context(llm))
    assert trajectory.ended == "answer" and trajectory.answer == "The sum is 42."
    results = [m for m in trajectory.messages if m.role == "tool"]
    assert [r.error for r in results] == [False, True, True, True, True]
    assert results[0].content == "42"
    assert "no tool named 'nope'" in results[1].content and "add, boom" in results[1].content
    assert "must be a JSON object" in results[2].content and "{not json" in results[2].content
    assert "a must be integer" in results[3].content
    assert "RuntimeError: the tool broke: hi" in results[4].content
    second = model.bodies[1]["messages"]
    assert second[-5]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 40}'}
    assert [m["tool_call_id"] for m in second[-4:]] == ["call_0", "call_1", "call_2", "call_3"]
    assert trajectory.tool_calls == 5 and trajectory.tool_errors == 4
    assert "trying boom" in trajectory.text and '"name": "boom"' in trajectory.text


def test_a_model_that_never_stops_calling_tools_ends_at_max_turns_with_reward_zero():
    model = Model(lambda messages, body: "```python\nprint(1)\n```")
    llm_cm = serve(model)
    config = RolloutConfig(shots=0, max_tokens=32, concurrency=4)
    with llm_cm as llm, react_python(AgentConfig(max_turns=3)) as agent:
        groups, scores = rollout_batch(
            llm, [{"prompt": "q", "answer": 1}], NumericMatchReward(), 2, config, 0, agent=agent
        )
    for trajectory, score in zip(groups[0], scores[0]):
        assert trajectory.ended == "max_turns" and trajectory.answer is None and trajectory.turns == 3
        assert score.value == 0.0 and score.reason.startswith("no answer: max_turns")
        assert trajectory.tool_calls == 3 and len([m for m in trajectory.messages if m.role == "tool"]) == 2
    assert len(model.bodies) == 6


def test_hanging_crashing_and_flooding_code_are_errors_the_model_sees():
    blocks = [
        "while True: pass",
        "import os; os.kill(os.getpid(), 9)",
        "print('y' * 5_000_000)",
        "raise ValueError('bad input')",
        "print(40 + 2)",
    ]

    def answer(messages, body):
        turn = sum(m["role"] == "assistant" for m in messages)
        return f"```python\n{blocks[turn]}\n```" if turn < len(blocks) else "The answer is 42"

    llm_cm = serve(Model(answer))
    agent = react_python(AgentConfig(max_turns=8, tool_timeout=2, max_tool_errors=5, max_tool_output=300))
    started = time.monotonic()
    with llm_cm as llm:
        trajectory = run(agent, context(llm))
    assert time.monotonic() - started < 60  # the hang was stopped by the tool timeout, not by the run's
    outputs = [m for m in trajectory.messages if m.role == "tool"]
    assert [m.error for m in outputs] == [True, True, False, True, False]
    assert "ran longer than 2 s" in outputs[0].content
    assert "interpreter stopped" in outputs[1].content and "restarted" in outputs[1].content
    assert "characters cut" in outputs[2].content and len(outputs[2].content) < 400
    assert "ValueError: bad input" in outputs[3].content
    assert outputs[4].content.endswith("42") and trajectory.answer == "The answer is 42"


def test_too_many_tool_errors_end_the_trajectory():
    llm_cm = serve(Model(lambda messages, body: "```python\n1/0\n```"))
    with llm_cm as llm:
        trajectory = run(react_python(AgentConfig(max_turns=10, max_tool_errors=2)), context(llm))
    assert trajectory.ended == "tool_errors" and trajectory.answer is None and trajectory.tool_errors == 2


def test_the_error_limit_holds_within_one_turn_of_many_calls():
    """5,000 calls to a tool that is not there in one native turn all ran with --max-tool-errors 3."""

    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    model = Model(lambda messages, body: tool_reply([("nope", "{}")] * 5000))
    with serve(model, tool_calls=True) as llm:
        trajectory = run(ToolAgent([FunctionTool(add)], AgentConfig(max_tool_errors=3)), context(llm))
    assert trajectory.ended == "tool_errors" and trajectory.tool_errors == 3
    assert len([m for m in trajectory.messages if m.role == "tool"]) == 3


def test_one_turn_runs_at_most_max_tool_calls_and_answers_the_rest_as_errors():
    """3,000 successful calls in one native turn all ran (and the next request held 3,003 messages)."""
    ran = []

    def add(a: int, b: int) -> int:
        """Add."""
        ran.append((a, b))
        return a + b

    model = Model(lambda messages, body: tool_reply([("add", as_json({"a": 1, "b": 2}))] * 3000))
    with serve(model, tool_calls=True) as llm:
        trajectory = run(ToolAgent([FunctionTool(add)], AgentConfig(max_tool_calls=4, max_tool_errors=2)), context(llm))
    assert len(ran) == 4 and trajectory.ended == "tool_errors"
    errors = [m for m in trajectory.messages if m.role == "tool" and m.error]
    assert len(errors) == 2 and "at most 4 tool calls" in errors[0].content


def test_tool_output_that_is_not_text_does_not_end_the_run():
    """A lone surrogate the code printed went back into the model's prompt, which refused it: every
    trajectory ended as the model's error and the run stopped."""
    replies = iter(["```python\nprint(chr(0xd800) + 'x')\n```", "The answer is 42"])
    with serve(Model(lambda messages, body: next(replies))) as llm:
        trajectory = run(react_python(AgentConfig(max_turns=3)), context(llm))
    assert trajectory.ended == "answer" and trajectory.answer == "The answer is 42"
    assert [m.content for m in trajectory.messages if m.role == "tool"][0].startswith("\ufffdx")


def test_a_failing_model_ends_its_trajectory_and_the_batch_goes_on():
    def answer(messages, body):
        if "fail" in last_user(messages):
            return error_reply(500, "upstream down")
        return '```tool\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```' if len(messages) < 3 else "3"

    def add(a: int, b: int) -> int:
        return a + b

    llm_cm = serve(Model(answer))
    with llm_cm as llm, ToolAgent([FunctionTool(add)]) as agent:
        ok, failed = agent.run_many([({"prompt": "add"}, context(llm, "add")), ({"prompt": "x"}, context(llm, "fail"))])
    assert ok.ended == "answer" and ok.answer == "3" and ok.messages[1].content == "3"
    assert failed.ended == "model_error" and failed.answer is None and "upstream down" in failed.detail


def test_a_model_that_fails_every_trajectory_fails_the_batch_as_a_plain_rollout_does(tmp_path):
    def add(a: int, b: int) -> int:
        return a + b

    llm_cm = serve(Model(lambda messages, body: error_reply(503, "upstream down")))
    with llm_cm as llm, ToolAgent([FunctionTool(add)]) as agent:
        with pytest.raises(BackendError, match="failed all 2 trajectories.*upstream down"):
            agent.run_many([({"prompt": "a"}, context(llm, "a")), ({"prompt": "b"}, context(llm, "b"))])
        with TrainingFreeGRPO.open(tmp_path / "lib.db") as grpo:
            samples = [{"prompt": "q", "answer": 1}]
            with pytest.raises(BackendError):
                train(llm, samples, NumericMatchReward(), [ExampleUpdate(grpo)], TrainConfig(group_size=2), agent=agent)
            assert grpo.stats().total_rollouts == 0 and ExampleUpdate(grpo).done() == 0  # a rerun starts over


def test_agent_faults_are_reasons_not_crashes():
    class Raises:
        async def run(self, sample, ctx):
            raise KeyError("oops")

    class Hangs:
        async def run(self, sample, ctx):
            await asyncio.Event().wait()

    class Junk:
        async def run(self, sample, ctx):
            return 42

    from tfgrpo.agents import as_agent

    ctx = context(None)
    assert run(as_agent(Raises()), ctx).ended == "agent_error"
    assert run(as_agent(Hangs(), AgentConfig(trajectory_timeout=0.5)), ctx).ended == "timeout"
    junk = run(as_agent(Junk()), ctx)
    assert junk.ended == "agent_error" and "int" in junk.detail
    with pytest.raises(ConfigError, match="async method run"):
        as_agent(object())


def test_stop_strings_never_cut_a_code_block():
    text = "Compute:\n```python\nfor i in range(3):\n    print(i)\n```\nmore"
    kept, call, problem = parse_text_turn(text, "stop", 0)
    assert call is not None and call.arguments == {"code": "for i in range(3):\n    print(i)"} and problem is None
    assert cut_outside_code("```python\na\nb\n```\nAnswer: 7\nQ: next", ["\n"]) == "```python\na\nb\n```"
    assert cut_outside_code("Answer: 7\nQ: next", ["\nQ:"]) == "Answer: 7"
    _, call, problem = parse_text_turn("```python\nprint(1", "length", 0)
    assert call is None and "cut off" in problem
    _, call, problem = parse_text_turn('```tool\n{"name": 3}\n```', "stop", 0)
    assert call is None and "needs" in problem
    _, call, problem = parse_text_turn("```tool\n" + "[" * 100_000 + "\n```", "stop", 0)  # past the parser's depth
    assert call is None and "not JSON" in problem
    from tfgrpo.agents.react import parse_arguments

    assert parse_arguments("[" * 100_000) == "[" * 100_000  # the raw text, which the toolbox refuses


def test_plain_text_prompts_grow_as_one_text():
    from support.llm import StandIn, chat_reply
    from tfgrpo.agents import AgentContext
    from tfgrpo.llm.base import GenerationParams
    from tfgrpo.llm.http import OpenAIBackend

    prompts = []

    async def completions(index, path, body):
        prompts.append(body["prompt"])
        text = "```python\nprint(6 * 7)\n```" if len(prompts) == 1 else "It is 42"
        return chat_reply([text], chat=False)

    with StandIn(completions) as server, OpenAIBackend(base_url=server.url, model="m", max_retries=0) as llm:
        ctx = AgentContext(llm, "Q: What is 6 * 7?\nA:", GenerationParams(max_tokens=32, seed=0), chat=False)
        trajectory = run(react_python(), ctx)
    assert trajectory.answer == "It is 42"
    assert prompts[0].startswith("You can run Python code") and prompts[0].endswith("Q: What is 6 * 7?\nA:")
    assert prompts[1] == prompts[0] + "```python\nprint(6 * 7)\n```\nOutput:\n```\n42\n```\n"


def test_the_toolbox_leaves_a_self_bounded_session_alone_and_cuts_the_others_at_the_timeout():
    from tfgrpo.agents.tools import Tool, Toolbox, ToolOutput

    class Slow(Tool):
        name = "slow"

        def __init__(self, bounded):
            self.bounded = bounded

        async def call(self, arguments, timeout):
            await asyncio.sleep(timeout * 3)  # e.g. an interpreter that had to start first
            return ToolOutput("done")

    async def main():
        async with Toolbox({"slow": Slow(True)}, 0.2, 100) as box:
            bounded = await box.call("slow", {})
        async with Toolbox({"slow": Slow(False)}, 0.2, 100) as box:
            unbounded = await box.call("slow", {})
        return bounded, unbounded

    bounded, unbounded = asyncio.run(main())
    assert bounded == ToolOutput("done")
    assert unbounded.error and "did not answer within 0.2 s" in unbounded.content
