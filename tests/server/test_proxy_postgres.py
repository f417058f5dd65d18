"""`tfgrpo serve` on a PostgreSQL library: two proxies (as on two machines) share the library, its records
and its lessons; a completion served by one takes its feedback through the other, and each group is learned
once."""

from __future__ import annotations

import signal

import pytest

from store.server import raw_query
from support.proxy import Deployment
from tfgrpo.server.config import library_name

pytestmark = pytest.mark.slow  # a PostgreSQL server and two proxies, each a process of its own


def test_two_proxies_on_one_postgresql_library_learn_each_group_once(upstream, postgres_server, tmp_path):
    library = postgres_server.new_url()
    first = Deployment(upstream, library, 1, log=tmp_path / "first.log")
    second = Deployment(upstream, library, 1, log=tmp_path / "second.log")
    try:
        (a,), (b,) = first.workers, second.workers
        for i in range(4):
            answer = first.chat(a, f"What is {i} + {i}?", n=2)
            ack = second.feedback(b, {"id": answer["id"], "rewards": [1, 0]})
            assert ack["groups"] == [i + 1]
            learned = raw_query(library, "SELECT COUNT(*) FROM experiences")[0][0]
            assert learned == i + 1  # in the library before the feedback's 200
        for deployment, worker in ((first, a), (second, b)):
            lift = deployment.clients[worker].get(f"/v1/libraries/{library_name(library)}/lift")
            assert lift.status_code == 200 and lift.json()["with_library"]["n"] == 4
        for deployment in (first, second):
            assert deployment.stop() in (0, -signal.SIGTERM)
    finally:
        for deployment in (first, second):
            if deployment.process.poll() is None:
                deployment.process.kill()
    rows = raw_query(library, "SELECT prompt, response FROM experiences ORDER BY prompt")
    assert rows == [(f"What is {i} + {i}?", "ok-0") for i in range(4)]
    assert raw_query(library, "SELECT COUNT(*) FROM proxy_groups")[0][0] == 4


def test_a_library_is_served_under_its_file_stem_or_its_schema():
    assert library_name("/srv/app.db") == "app"
    assert library_name("postgresql://u:p@db:5432/tfgrpo?schema=support") == "support"
    assert library_name("postgresql://db/tfgrpo") == "tfgrpo"
