"""The tables of `tfgrpo serve`'s completion records (`server/records.py`), prefixed `proxy_` and kept in the
library's own database: defined here, below both the records and the copies of whole libraries
(`transfer.py`), which take them along."""

from __future__ import annotations

from .sql import Database, Transaction

PROXY_SCHEMA = """
CREATE TABLE IF NOT EXISTS proxy_completions (
    id TEXT PRIMARY KEY,
    created {real} NOT NULL,
    prompt TEXT NOT NULL,
    prompt_key TEXT NOT NULL,
    n {int} NOT NULL,
    choices TEXT NOT NULL,
    holdout {int} NOT NULL,
    learnable {int} NOT NULL,
    info TEXT NOT NULL,
    sample TEXT,
    group_seq {int}
);
CREATE INDEX IF NOT EXISTS proxy_open ON proxy_completions(prompt_key, created) WHERE group_seq IS NULL AND n = 1;
CREATE TABLE IF NOT EXISTS proxy_turns (
    completion_id TEXT PRIMARY KEY,
    trajectory TEXT NOT NULL,
    created {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS proxy_turns_of ON proxy_turns(trajectory, created);
CREATE TABLE IF NOT EXISTS proxy_feedback (
    completion_id TEXT NOT NULL,
    choice {int} NOT NULL,
    reward {real} NOT NULL,
    created {real} NOT NULL,
    PRIMARY KEY (completion_id, choice)
);
CREATE TABLE IF NOT EXISTS proxy_figures (
    name TEXT PRIMARY KEY,
    value {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS proxy_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS proxy_groups (
    seq {int} PRIMARY KEY,
    created {real} NOT NULL,
    prompt TEXT NOT NULL,
    responses TEXT NOT NULL,
    rewards TEXT NOT NULL,
    members TEXT NOT NULL,
    sample TEXT
);
"""

PROXY_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "proxy_completions": (
        (
            "id",
            "created",
            "prompt",
            "prompt_key",
            "n",
            "choices",
            "holdout",
            "learnable",
            "info",
            "sample",
            "group_seq",
        ),
        ("id",),
    ),
    "proxy_turns": (("completion_id", "trajectory", "created"), ("completion_id",)),
    "proxy_feedback": (("completion_id", "choice", "reward", "created"), ("completion_id", "choice")),
    "proxy_figures": (("name", "value"), ("name",)),
    "proxy_groups": (("seq", "created", "prompt", "responses", "rewards", "members", "sample"), ("seq",)),
}
"""What a copy of a library takes along: each table's columns (in the schema's order) and its key. (Not
`proxy_leases`: who learns a library's groups now is no part of a copy.)"""


def create_proxy_tables(tx: Transaction, db: Database) -> None:
    """Make the tables (and indexes) where they are missing, in the caller's write transaction."""
    for statement in db.dialect.ddl(PROXY_SCHEMA).split(";"):
        if statement.strip():
            tx.execute(statement)
