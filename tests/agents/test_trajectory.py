"""A rollout is a trajectory everywhere: a plain completion is a one-turn trajectory that reads, scores and
stores as before; an agent's run is scored on its final answer (or not at all, when none came), stored as a
transcript that prompts show as text or as turns within the token budget, summarised for the critic from
its tool calls, and counted in the step's and the evaluation's figures."""

import json

import numpy as np

from support.llm import StandIn, chat_reply
from tfgrpo import TrainingFreeGRPO
from tfgrpo.agents import Agent, AgentContext, Message, Tally, ToolCall, Trajectory
from tfgrpo.learn import ExampleUpdate, Group, LessonUpdate, rollout_batch
from tfgrpo.learn.example_update import TOOL_CHARS
from tfgrpo.learn.rollouts import RolloutConfig
from tfgrpo.llm.base import Generation, GenerationParams
from tfgrpo.llm.http import OpenAIBackend
from tfgrpo.loop import EvalConfig, TrainConfig, evaluate, run_step
from tfgrpo.prompting import build_prompt, select_examples, trajectory_of
from tfgrpo.rewards.base import FunctionReward, Score
from tfgrpo.semantic import LessonConfig, LessonLibrary

SAMPLES = [{"id": "a", "prompt": "What is 2+2?", "answer": "4"}, {"id": "b", "prompt": "What is 3+3?", "answer": "6"}]
SEEN: list = []


def exact(prompt, response, sample):
    SEEN.append((response, sample))
    return Score(float(response.strip() == sample["answer"]))


REWARD = FunctionReward(exact)


class Scripted(Agent):
    """An agent whose runs are written out: the first rollout of each prompt calls a tool (with a long
    output) and answers right, the second calls a missing tool and gives up without an answer."""

    name = "scripted"

    def __init__(self):
        self.contexts: list[AgentContext] = []

    async def run(self, sample, context):
        self.contexts.append(context)
        if context.params.seed % 2 == 0:
            call = ToolCall("c0", "python", {"code": "print(2+2)"}, inline=True)
            return Trajectory(
                [
                    Message("assistant", "Let me run it.\n```python\nprint(2+2)\n```", (call,)),
                    Message("tool", "x" * 3000, tool_call_id="c0", name="python"),
                    Message("assistant", sample["answer"]),
                ],
                sample["answer"],
                prompt_tokens=30,
                completion_tokens=12,
            )
        call = ToolCall("c0", "search", {"q": "sum"})
        return Trajectory(
            [Message("assistant", "", (call,)), Message("tool", "there is no tool named 'search'", error=True)],
            None,
            "tool_errors",
            "1 tool errors",
        )


def test_a_plain_completion_is_a_one_turn_trajectory():
    run = Trajectory.of(Generation("4", "stop", 7, 1))
    assert run.plain and run.text == run.answer == "4"
    assert (run.turns, run.tool_calls, run.tool_errors, run.tokens) == (1, 0, 0, 8)
    group = Group.of(SAMPLES[0], [run, Trajectory.of(Generation("5"))], [Score(1.0), Score(0.0)])
    assert group.responses == ["4", "5"] and group.trajectories is None


def test_agent_rollouts_are_scored_on_the_answer_and_stored_as_transcripts(tmp_path):
    SEEN.clear()
    agent = Scripted()
    config = TrainConfig(batch_size=2, group_size=2, shots=0, max_tokens=16, stop=("\n",), concurrency=4)
    with TrainingFreeGRPO.open(tmp_path / "lib.db") as grpo, agent:
        # The step's seeds decide which rollout is which; each trajectory has a seed of its own.
        metrics = run_step(
            _NoModel(), SAMPLES, REWARD, [ExampleUpdate(grpo, "sums")], config, global_step=1, agent=agent
        )
        seeds = [c.params.seed for c in agent.contexts]
        assert len(set(seeds)) == 4 and all(c.params.n == 1 and c.params.stop is None for c in agent.contexts)
        assert all(c.stop == ("\n",) and c.params.max_tokens == 16 for c in agent.contexts)
        answered = sum(s % 2 == 0 for s in seeds)
        # Only the runs with an answer reach the reward, with the answer, not the transcript.
        assert len(SEEN) == answered and all(r == s["answer"] for r, s in SEEN)
        figures = metrics.trajectories
        assert figures["rollouts"] == 4 and figures["tool_calls_per_rollout"] == 1.0
        assert figures["endings"] == {k: v for k, v in {"answer": answered, "tool_errors": 4 - answered}.items() if v}
        assert "tool calls" not in json.dumps(metrics.to_dict()) and metrics.to_dict()["trajectories"] == figures
        stored = grpo.experience_library
        assert stored, "a run that answered beat one that did not"
        example = stored[0]
        assert example.response.startswith("Let me run it.\n```python\nprint(2+2)\n```\nOutput:\n```\nxxx")
        assert len(example.response) < TOOL_CHARS + 200 and "characters cut ...]\n" in example.response
        run = trajectory_of(example)
        assert run is not None and run.tool_calls == 1 and run.answer == example.response.splitlines()[-1]
        kept = run.messages[1].content
        assert len(kept) < TOOL_CHARS + 100 and "characters cut" in kept
        # As turns: the query, the assistant's call, the tool's result as the user's message, the answer.
        prompt = build_prompt("What is 5+5?", [example], example_format="turns", token_budget=10_000)
        roles = [m["role"] for m in prompt]
        assert roles == ["user", "assistant", "user", "assistant", "user"]
        assert prompt[2]["content"].startswith("Output:\n```\nxxx") and "characters cut" in prompt[2]["content"]
        # As text, within the budget: a budget smaller than the transcript leaves it out.
        assert "Output:" in build_prompt("What is 5+5?", [example], token_budget=200)
        assert build_prompt("What is 5+5?", [example], token_budget=50) == "Q: What is 5+5?\nA:"
        assert select_examples(grpo, "What is 5+5?", 1)[0].response in [e.response for e in stored]


def test_the_critic_summarises_a_run_from_its_tool_calls(tmp_path):
    prompts: list[str] = []

    async def critic(index, path, body):
        text = body["messages"][-1]["content"]
        prompts.append(text)
        if text.startswith("You study"):
            return chat_reply([json.dumps([{"operation": "add", "text": "Check tool names before calling."}])])
        return chat_reply(["summary"])

    runs = [Scripted(), Scripted()]
    good = _run(runs[0], seed=0)
    bad = _run(runs[1], seed=1)
    group = Group.of(SAMPLES[0], [good, bad], [Score(1.0), Score(0.0)])
    with StandIn(critic) as server, LessonLibrary(tmp_path / "l.db") as library:
        llm = OpenAIBackend(base_url=server.url, model="m", max_retries=0)
        update = LessonUpdate(library, LessonConfig(structured_output=False), critic=llm)
        from tfgrpo.learn import StepContext

        update.commit([group], StepContext(seed=0, global_step=1, position={"global_step": 1}))
        llm.close()
    summaries = [p for p in prompts if p.startswith("You are analysing one attempt at a task by an agent")]
    assert len(summaries) == 2
    assert "tool calls: python x1; tool errors: 0; ended: answer" in summaries[0]
    assert "tool calls: search x1; tool errors: 1; ended: tool_errors (1 tool errors)" in summaries[1]
    assert "characters cut" in summaries[0]  # the long tool output is cut for the critic
    assert "which tools it called" in summaries[0]
    assert library.render_list().endswith("Check tool names before calling.")


def test_evaluation_carries_the_trajectory_figures():
    report = evaluate(_NoModel(), SAMPLES, REWARD, {"zero-shot": None}, EvalConfig(k=2, shots=0), agent=Scripted())
    figures = report.conditions[0].figures
    assert figures["rollouts"] == 4 and 0 < figures["answered"] < 1
    assert report.to_dict()["conditions"]["zero-shot"]["trajectories"] == figures
    assert "tool calls" in report.table()
    assert np.all(report.conditions[0].rewards[report.conditions[0].rewards > 0] == 1.0)
    plain = evaluate(_Echo(), SAMPLES, REWARD, {"zero-shot": None}, EvalConfig(k=1, shots=0))
    assert "trajectories" not in plain.to_dict()["conditions"]["zero-shot"] and "tool calls" not in plain.table()


def test_tally_means_per_rollout():
    tally = Tally()
    for run in (_run(Scripted(), 0), _run(Scripted(), 1)):
        tally.add(run)
    figures = tally.to_dict()
    assert figures["tool_calls_per_rollout"] == 1.0 and figures["tool_errors_per_rollout"] == 0.5
    assert figures["answered"] == 0.5 and figures["endings"] == {"answer": 1, "tool_errors": 1}


def test_a_rollout_batch_without_agent_is_the_completions_as_they_came():
    groups, scores = rollout_batch(_Echo(), SAMPLES, REWARD, 2, RolloutConfig(shots=0), seed=0)
    assert [[t.text for t in g] for g in groups] == [["4", "4"], ["6", "6"]]
    assert all(t.plain and t.finish_reason == "stop" for g in groups for t in g)
    assert [[s.value for s in g] for g in scores] == [[1.0, 1.0], [1.0, 1.0]]


def _run(agent, seed):
    import asyncio

    context = AgentContext(_NoModel(), "What is 2+2?", GenerationParams(seed=seed))
    return asyncio.run(agent.run(SAMPLES[0], context))


class _NoModel:
    """The agents above never call their model."""

    model_name = "none"
    tool_calls = False

    def generate(self, prompts, params=None, *, chat=None):
        raise AssertionError("not called")

    @property
    def usage(self):
        from tfgrpo.llm.base import Usage

        return Usage()


class _Echo(_NoModel):
    """Answers each arithmetic prompt right (a completion, no agent)."""

    def generate(self, prompts, params=None, *, chat=None):
        out = []
        for prompt in prompts:
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            out.append([Generation("4" if "2+2" in text else "6", "stop", 5, 1)] * params.n)
        return out
