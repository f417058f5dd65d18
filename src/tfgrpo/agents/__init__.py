"""Agents: rollouts that are trajectories of many turns with tool calls (the paper's ReAct agent with a
Python interpreter, your functions as tools, the tools of any MCP server, or your own agent object), and
`Trajectory`, the one form every rollout takes (a plain completion is a one-turn trajectory)."""

from .base import Agent, AgentConfig, AgentContext, as_agent
from .mcp_tools import MCPAgent
from .python_tool import PythonTool, react_python
from .react import ToolAgent
from .tools import FunctionTool, Tool, ToolOutput, ToolUnavailable
from .trajectory import ENDINGS, Message, Tally, ToolCall, Trajectory

__all__ = [
    "ENDINGS",
    "Agent",
    "AgentConfig",
    "AgentContext",
    "FunctionTool",
    "MCPAgent",
    "Message",
    "PythonTool",
    "Tally",
    "Tool",
    "ToolAgent",
    "ToolCall",
    "ToolOutput",
    "ToolUnavailable",
    "Trajectory",
    "as_agent",
    "react_python",
]
