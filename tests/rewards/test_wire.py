"""The plain-data encoding between judge and candidate: what round-trips, and what a hostile sender
cannot get through (custom types, bad tags, deep nesting, unhashable keys)."""

from __future__ import annotations

import json
import math

import pytest

from tfgrpo.rewards._wire import MAX_DEPTH, WireError, decode, dumps, encode, loads


def roundtrip(value):
    return decode(loads(dumps(encode(value))))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**200,
        -(2**20000),
        1.5,
        -0.0,
        math.inf,
        1e-310,
        3 + 4j,
        "",
        "é\ud800\n",
        b"\x00\xff",
        [1, [2, [3]]],
        (1, "a"),
        {"k": [1], 2: None, (1, 2): {3}},
        {1, 2.5, "x"},
        frozenset({(1,)}),
        [[]] * 3,
    ],
    ids=lambda value: type(value).__name__,
)
def test_plain_data_round_trips_with_its_exact_type(value):
    back = roundtrip(value)
    assert back == value and type(back) is type(value)
    assert [type(v) for v in back] == [type(v) for v in value] if isinstance(value, list | tuple) else True
    assert math.copysign(1, roundtrip(-0.0)) == -1


def test_nan_round_trips_as_nan():
    assert math.isnan(roundtrip(math.nan))


def test_subclasses_are_sent_as_their_plain_base_type():
    class Yes(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Loud(dict):
        pass

    assert type(roundtrip(Yes(3))) is int and roundtrip(Yes(3)) == 3 and roundtrip(Yes(3)) != 4
    assert type(roundtrip(Loud(a=1))) is dict


@pytest.mark.parametrize("value", [object(), (i for i in []), range(3), print, type, Exception("x"), 1.5j.conjugate])
def test_what_is_not_plain_data_is_refused(value):
    with pytest.raises(WireError, match="cannot be sent"):
        encode(value)


def test_nesting_is_limited_both_ways():
    deep = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(WireError, match="nested"):
        encode(deep)
    node = ["N"]
    for _ in range(MAX_DEPTH + 5):
        node = ["l", [node]]
    with pytest.raises(WireError, match="nested"):
        decode(node)
    with pytest.raises(WireError, match="not JSON"):
        loads(b"[" * 200_000)


@pytest.mark.parametrize(
    "node",
    [
        None,
        [],
        ["x"],
        ["b", 1],
        ["b", "true"],
        ["i", 5],
        ["i", "0x5"],
        ["i", "5 "],
        ["f", 1.5],
        ["f", "0x1p"],
        ["s", 5],
        ["s", "a", "b"],
        ["y", "!!"],
        ["l", "abc"],
        ["l", [5]],
        ["d", [[["l", []], ["N"]]]],
        ["d", [["N"]]],
        ["S", [["l", []]]],
        ["N", 1],
        ["c", ["1", "2", "3"]],
        {"tag": "i"},
        ["__eq__", []],
    ],
)
def test_hostile_encodings_are_refused(node):
    with pytest.raises(WireError):
        decode(json.loads(json.dumps(node)))


def test_a_message_is_one_ascii_line():
    line = dumps(["ok", encode("a\nb\u2028\ud800")])
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
