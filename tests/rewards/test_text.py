"""Extracting code and numbers from free-form responses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfgrpo.rewards import extract_code, extract_last_number


def test_code_in_a_fence_is_extracted():
    response = "Sure!\n```python\ndef f():\n    return 1\n```\nThat is it."
    assert extract_code(response) == "def f():\n    return 1\n"


def test_the_block_of_the_requested_language_wins():
    response = "```\nplain\n```\n```rust\nfn main() {}\n```\n```py\nx = 1\n```"
    assert extract_code(response, "rust") == "fn main() {}\n"
    assert extract_code(response, "python") == "x = 1\n"
    assert extract_code(response, "c") == "plain\n"  # no C block: the first one


def test_an_unclosed_fence_runs_to_the_end_and_no_fence_means_all():
    assert extract_code("```python\nx = 1\ny = 2") == "x = 1\ny = 2"
    assert extract_code("x = 1\n") == "x = 1\n"


def test_tildes_and_longer_fences_work():
    assert extract_code("~~~c\nint x;\n~~~") == "int x;\n"
    assert extract_code("````python\nprint('```')\n````") == "print('```')\n"


@pytest.mark.parametrize(
    "text, number",
    [
        ("3 + 4 = 7.", 7.0),
        ("The answer is -12", -12.0),
        ("There are 1,234 apples", 1234.0),
        ("pi is about 3.14", 3.14),
        ("7 - 3 = 4\n", 4.0),
        ("x2 and the 5th", None),
        ("no digits here", None),
        ("\u22125", -5.0),
    ],
)
def test_the_last_number_is_found(text, number):
    assert extract_last_number(text) == number


@given(st.integers(-(10**9), 10**9), st.text(alphabet="abc .,!?\n", max_size=20))
def test_a_number_at_the_end_of_any_reply_is_found(number, prefix):
    assert extract_last_number(f"{prefix} {number}") == number
