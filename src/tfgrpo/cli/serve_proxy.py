"""`tfgrpo serve`: the learning OpenAI-compatible proxy (see `tfgrpo.server.proxy`)."""

from __future__ import annotations

import sys

from ..server.limits import add_limit_arguments, limits_from_args
from .common import executor_args, open_executor_of, port_number
from .options import add_config_args, config_from_args
from .report import open_run_tracker, result_args


def add_commands(command) -> None:
    from ..server.config import ProxyConfig

    p = command(
        "serve",
        cmd_serve,
        "Serve an OpenAI-compatible proxy in front of --upstream that puts the library's lessons and "
        "experiences into every request and learns from POST /v1/feedback (or from --reward, best-of-G).",
    )
    p.add_argument(
        "--upstream",
        default=None,
        help="the model behind the proxy: openai:MODEL@http://host:port/v1, a URL, or local (serve-model in-process)",
    )
    p.add_argument("--library", "-l", default=None, help="SQLite library file (created if missing); not with --keys")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (without --keys: loopback only)")
    p.add_argument("--port", type=port_number, default=8080, help="port to listen on")
    p.add_argument("--keys", default=None, metavar="KEYS.TOML", help="tenants: hashed API keys -> library and role")
    p.add_argument(
        "--reward",
        default=None,
        help="best-of-G: score --group-size choices per request with this reward (any `train --reward`, "
        "module:name included), return the best, learn from the group",
    )
    p.add_argument("--critic", default=None, help="backend spec of the lessons critic (default: the upstream)")
    p.add_argument(
        "--validate-margin",
        type=float,
        default=None,
        help="keep a lessons update only if its reward (by --reward) on recent prompts is >= the current "
        "lessons' minus this margin",
    )
    p.add_argument("--hash-key", default=None, metavar="KEY", help="print the sha256 of KEY for keys.toml and exit")
    add_config_args(p.add_argument_group("proxy"), ProxyConfig)
    executor_args(p, only=["executor", "reward_cpus", "worker_retries", "ray_cpus"])  # where --reward scores
    add_limit_arguments(p)
    result_args(p, out=False)


def cmd_serve(args) -> int | None:
    from ..errors import ConfigError
    from ..server.config import ProxyConfig
    from ..server.proxy import serve
    from ..server.tenants import hash_key

    if args.hash_key is not None:
        print(hash_key(args.hash_key))
        return 0
    if not args.upstream:
        raise ConfigError("give --upstream SPEC (openai:MODEL@http://host:port/v1, a URL, or local)")
    try:
        config = config_from_args(ProxyConfig, args)
        if config.workers > 1 and args.executor != "local":
            raise ConfigError(
                "--reward on an --executor other than local needs --workers 1 for now (each worker process would "
                "start or join Ray on its own)"
            )
        with open_executor_of(args) as executor, open_run_tracker(args, "serve") as tracker:
            reward = None
            if args.reward:
                from ..rewards import get_reward

                # (the worker processes of --workers build the reward from its spec themselves)
                reward = args.reward if config.workers > 1 else executor.reward(get_reward(args.reward))
            serve(
                args.upstream,
                args.library,
                args.host,
                args.port,
                config,
                keys_path=args.keys,
                limits=limits_from_args(args),
                reward=reward,
                critic=args.critic,
                validate_margin=args.validate_margin,
                tracker=tracker if args.track else None,
            )
    except KeyboardInterrupt:
        print("tfgrpo serve: stopped", file=sys.stderr)
    return None
