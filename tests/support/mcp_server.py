"""A real MCP server for the tests (the `mcp` package's MCPServer): `python mcp_server.py` speaks stdio,
`python mcp_server.py --http PORT` streamable HTTP on 127.0.0.1. Its tools: `multiply` (what a model
should use), `die` (the server exits mid-call), `garbage` (writes a line that is no JSON-RPC on stdout,
then answers), `sleep` (answers after some seconds), `shout` (a long answer)."""

import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("tfgrpo-test")


@server.tool()
def multiply(a: int, b: int) -> str:
    """Multiply two whole numbers exactly."""
    return str(a * b)


@server.tool()
def die() -> str:
    """Exit the server process at once."""
    os._exit(3)


@server.tool()
def garbage() -> str:
    """Write junk where the protocol's messages go, then answer."""
    os.write(1, b"this is not JSON-RPC at all\n")
    return "after the junk"


@server.tool()
def sleep(seconds: float) -> str:
    """Answer after `seconds`."""
    time.sleep(seconds)
    return "awake"


@server.tool()
def shout(times: int) -> str:
    """A long answer."""
    return "A" * times


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
