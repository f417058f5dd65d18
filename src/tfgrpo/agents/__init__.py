"""Agents: rollouts that are trajectories of many turns with tool calls (the paper's ReAct agent with a
Python interpreter, your functions as tools, the tools of any MCP server, or your own agent object), and
`Trajectory`, the one form every rollout takes (a plain completion is a one-turn trajectory)."""

from .base import Agent, AgentConfig, AgentContext, as_agent
from .trajectory import ENDINGS, Message, Tally, ToolCall, Trajectory

__all__ = [
    "ENDINGS",
    "Agent",
    "AgentConfig",
    "AgentContext",
    "Message",
    "Tally",
    "ToolCall",
    "Trajectory",
    "as_agent",
]
