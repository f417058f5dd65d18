"""`tfgrpo serve-model`: a backend as an OpenAI-compatible HTTP API."""

from __future__ import annotations

import os

from ..server.limits import add_limit_arguments, limits_from_args
from .common import port_number


def add_commands(command) -> None:
    p = command("serve-model", cmd_serve_model, "Serve a backend as an OpenAI-compatible HTTP API.")
    p.add_argument("--model", default="local", help="backend spec (see `train --help`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface; set --api-key)")
    p.add_argument("--port", type=port_number, default=8000, help="port to listen on")
    p.add_argument("--model-name", default=None, help="the model id clients use (default: from the backend)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on every route but /health and /healthz "
        "(default: $TFGRPO_API_KEY; none: open)",
    )
    add_limit_arguments(p)
    from ..llm.guidance import GuidanceConfig
    from .options import add_config_args

    g = p.add_argument_group("guidance (GuidanceConfig: a library steers every answer's decoding)")
    g.add_argument(
        "--library", "-l", default=None, help="the library whose successes guide each request (needs --guidance)"
    )
    add_config_args(g, GuidanceConfig, exclude=["guidance_tokenizer"])


def cmd_serve_model(args) -> None:
    from ..errors import ConfigError
    from ..llm.guidance import GuidanceConfig
    from ..server.model_server import run_model_server
    from .common import open_library
    from .options import config_from_args

    guidance = config_from_args(GuidanceConfig, args)
    if (guidance.guidance == "none") != (args.library is None):
        raise ConfigError("--guidance bias|constrain and --library go together: the library's successes guide")
    library = open_library(args.library) if args.library else None
    try:
        run_model_server(
            args.model,
            args.host,
            args.port,
            args.model_name,
            limits=limits_from_args(args),
            api_key=args.api_key or os.environ.get("TFGRPO_API_KEY"),
            guidance=guidance if library is not None else None,
            library=library,
        )
    finally:
        if library is not None:
            library.close()
