"""Your own agent, from another framework: a smolagents `CodeAgent` (the model writes Python between
`<code>` tags, smolagents runs it with its own local executor and feeds back what it printed), driven by
the policy tfgrpo gives it, so training and evaluation learn from its runs like any other rollouts:

    tfgrpo train --task arithmetic --task-option difficulty=hard --agent examples/smolagents_agent.py:make_agent

`make_agent(config)` is the factory `--agent module:factory` calls. The agent's `run(sample, context)`
returns a `tfgrpo.agents.Trajectory` built from smolagents' memory: each step's reply and code, what it
printed or the error it raised, and the final answer. Note that smolagents runs the code in its own
restricted interpreter in this process, not in tfgrpo's sandbox (`--agent react-python` does that).
"""

from __future__ import annotations

import asyncio

from smolagents import CodeAgent, tool
from smolagents.models import ChatMessage, MessageRole, Model, get_clean_message_list, tool_role_conversions
from smolagents.monitoring import TokenUsage

from tfgrpo.agents import AgentConfig, AgentContext, Message, ToolCall, Trajectory


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers exactly.

    Args:
        a: the first number
        b: the second number
    """
    return a * b


class PolicyModel(Model):
    """smolagents' model interface over the policy tfgrpo hands the agent (its sampling, its cache)."""

    def __init__(self, context: AgentContext) -> None:
        super().__init__(model_id=context.backend.model_name or "tfgrpo-policy")
        self.context = context

    def generate(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs):
        chat = get_clean_message_list(messages, role_conversions=tool_role_conversions, flatten_messages_as_text=True)
        prompt = [{"role": str(getattr(m["role"], "value", m["role"])), "content": str(m["content"])} for m in chat]
        params = self.context.params.replace(stop=[s for s in stop_sequences or [] if s] or None)
        generation = self.context.backend.generate([prompt], params, chat=True)[0][0]
        usage = TokenUsage(generation.prompt_tokens or 0, generation.completion_tokens or 0)
        return ChatMessage(role=MessageRole.ASSISTANT, content=generation.text, token_usage=usage)


class SmolCodeAgent:
    """A smolagents CodeAgent with the `multiply` tool, as a tfgrpo agent."""

    name = "smolagents-code"

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    async def run(self, sample: dict, context: AgentContext) -> Trajectory:
        agent = CodeAgent(
            tools=[multiply], model=PolicyModel(context), max_steps=self.config.max_turns, verbosity_level=0
        )
        answer = await asyncio.to_thread(agent.run, sample["prompt"])
        return trajectory_of(agent, answer)


def trajectory_of(agent: CodeAgent, answer) -> Trajectory:
    """The run in smolagents' memory as a tfgrpo trajectory."""
    messages: list[Message] = []
    prompt_tokens = completion_tokens = 0
    for step in agent.memory.steps:
        output = getattr(step, "model_output", None)
        if output is None:
            continue
        usage = getattr(step, "token_usage", None)
        if usage is not None:
            prompt_tokens += usage.input_tokens
            completion_tokens += usage.output_tokens
        code = getattr(step, "code_action", None)
        call = (ToolCall(f"step_{step.step_number}", "python", {"code": code}, inline=True),) if code else ()
        messages.append(Message("assistant", str(output), call))
        if code:
            error = getattr(step, "error", None)
            result = str(error) if error is not None else str(step.observations or "")
            messages.append(Message("tool", result, tool_call_id=call[0].id, name="python", error=error is not None))
    done = agent.memory.steps and getattr(agent.memory.steps[-1], "is_final_answer", False)
    text = None if answer is None else str(answer)
    return Trajectory(
        messages,
        text,
        "answer" if text is not None else "max_turns",
        "" if done or text is not None else "smolagents stopped without a final answer",
        prompt_tokens,
        completion_tokens,
    )


def make_agent(config: AgentConfig = AgentConfig()) -> SmolCodeAgent:
    return SmolCodeAgent(config)
