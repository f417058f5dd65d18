"""`tfgrpo mcp`: a library as an MCP server (stdio, or streamable HTTP with --http)."""

from __future__ import annotations

import argparse

from .common import port_number
from .options import add_config_args, config_from_args

SERVED = [
    "shots", "select", "retrieval_mode", "min_relevance", "advantage_weight", "token_budget", "placement",
    "group_size", "group_window", "seed",
]  # fmt: skip


def add_commands(command) -> None:
    from ..server.config import ProxyConfig
    from ..server.mcp_service import MCPLimits

    p = command(
        "mcp",
        cmd_mcp,
        "Serve a library over MCP (stdio by default) with the tools context(task, k), lessons(), "
        "record(task, response, reward, trajectory?) and stats(): an agent asks what was learned about its task "
        "and records how it went; records become groups and experiences as in `tfgrpo serve`.",
    )
    p.add_argument("--library", "-l", default="library.db", help="SQLite library (made if missing)")
    p.add_argument(
        "--http",
        default=None,
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio",
    )
    add_config_args(p.add_argument_group("serving (as tfgrpo serve)"), ProxyConfig, only=SERVED)
    add_config_args(p.add_argument_group("limits"), MCPLimits)


def cmd_mcp(args) -> int | None:
    import asyncio

    from ..errors import ConfigError
    from ..server.config import ProxyConfig, is_loopback
    from ..server.mcp_service import LibraryService, MCPLimits, run_server

    http = None
    if args.http:
        host, _, port = args.http.rpartition(":")
        try:
            http = (host, port_number(port)) if host else None
        except argparse.ArgumentTypeError:
            pass
        if http is None:
            raise ConfigError(f"--http takes HOST:PORT (a port of 1 to 65535), got {args.http!r}")
        if not is_loopback(http[0].strip("[]")):  # no key is asked for: anyone who reaches it writes rewards
            raise ConfigError(
                f"tfgrpo mcp --http asks no key, so it binds only a loopback address (127.0.0.1, ::1, localhost), "
                f"not {http[0]!r}; put a proxy that authenticates in front to serve other hosts"
            )
    service = LibraryService(args.library, config_from_args(ProxyConfig, args), config_from_args(MCPLimits, args))
    asyncio.run(run_server(service, http))
    return None
