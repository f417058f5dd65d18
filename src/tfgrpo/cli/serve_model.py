"""`tfgrpo serve-model`: a backend as an OpenAI-compatible HTTP API."""

from __future__ import annotations

import os

from ..server.limits import add_limit_arguments, limits_from_args


def add_commands(command) -> None:
    p = command("serve-model", cmd_serve_model, "Serve a backend as an OpenAI-compatible HTTP API.")
    p.add_argument("--model", default="local", help="backend spec (see `train --help`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface; set --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--model-name", default=None, help="the model id clients use (default: from the backend)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on every route but /health and /healthz "
        "(default: $TFGRPO_API_KEY; none: open)",
    )
    add_limit_arguments(p)


def cmd_serve_model(args) -> None:
    from ..server.model_server import run_model_server

    run_model_server(
        args.model,
        args.host,
        args.port,
        args.model_name,
        limits=limits_from_args(args),
        api_key=args.api_key or os.environ.get("TFGRPO_API_KEY"),
    )
