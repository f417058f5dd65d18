"""The bundled multi-domain task: five domains, each with its own answer convention and a strict checker,
samples tagged with their domain, sizes and seeds as options, a held-out split per domain."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tfgrpo.errors import ConfigError
from tfgrpo.tasks import DOMAINS, generate_domain, get_task, list_tasks
from tfgrpo.tasks.multidomain import DomainReward

# Per domain: a right answer as the reference writes it, what else a strict checker accepts, and near misses.
CONVENTIONS = {
    "dates": ("dates-0-0", ["2002-05-21", " 2002-05-21\n"], ["2002-5-21", "21/05/2002", "May 21, 2002", "2002-05-21."]),
    "json": (
        "json-0-0",
        ['{"name": "Farah", "age": 22}', '{"age":22,"name":"Farah"}'],
        [
            *[
                '{"name": "Farah", "age": "22"}',
                "name: Farah, age: 22",
                '{"name": "Farah"}',
                '{"name": "farah", "age": 22}',
            ],
            *["[" * 100_000 + "]" * 100_000, "9" * 5000],  # past the parser's depth, past int()'s digits
        ],
    ),
    "quote": ("quote-0-0", ['"cold lamp"'], ["cold lamp", "'cold lamp'", '"Cold lamp"', '"cold lamp".']),
    "lower": ("lower-0-0", ["green red", "green red "], ["GREEN RED", "Green red", "green, red", "green-red"]),
    "hyphen": ("hyphen-0-0", ["small-road"], ["small road", "small_road", "Small-Road", "small-road."]),
}


def test_five_domains_each_with_a_checker_that_takes_only_its_own_convention():
    assert "multidomain" in list_tasks() and len(DOMAINS) >= 5 and set(CONVENTIONS) == set(DOMAINS)
    reward = DomainReward()
    for name, (sample_id, right, wrong) in CONVENTIONS.items():
        sample = generate_domain(name, 3, seed=0)[0]
        assert sample["id"] == sample_id and sample["metadata"] == {"domain": name} and sample["domain"] == name
        for response in [sample["answer"], *right]:
            assert reward(sample["prompt"], response, sample) == 1.0, (name, response)
        for response in wrong:
            assert reward(sample["prompt"], response, sample) == 0.0, (name, response)
        others = [generate_domain(o, 1, seed=0)[0] for o in DOMAINS if o != name]
        assert all(reward(sample["prompt"], o["answer"], sample) == 0.0 for o in others)  # another's answer
    assert reward("x", "y", {"prompt": "x", "domain": "chess", "answer": "y"}) == 0.0  # no checker, no credit


def test_samples_are_distinct_deterministic_per_seed_and_sized_by_the_options():
    for name in DOMAINS:
        samples = generate_domain(name, 12, seed=2)
        assert samples == generate_domain(name, 12, seed=2) != generate_domain(name, 12, seed=3)
        assert len({s["prompt"] for s in samples}) == 12
    task = get_task("multidomain", domains="json,dates", n=10, seed=1, test_fraction=0.3)
    samples = task.load("all")
    assert [s["domain"] for s in samples[:4]] == ["json", "dates", "json", "dates"]  # interleaved, in order
    test, train = task.load("test"), task.load("train")
    assert Counter(s["domain"] for s in test) == {"json": 3, "dates": 3}  # each domain split apart
    assert not {s["prompt"] for s in test} & {s["prompt"] for s in train} and len(test) + len(train) == 20


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown domain"):
        get_task("multidomain", domains="dates,chess")
    with pytest.raises(ConfigError, match="each domain once"):
        get_task("multidomain", domains="dates,dates")
    with pytest.raises(ConfigError, match="can draw 1 to"):
        get_task("multidomain", n=10**6)
    with pytest.raises(ConfigError, match="test_fraction"):
        get_task("multidomain", test_fraction=1.0)


def test_the_json_checker_takes_one_answer_of_the_exact_form_and_no_other():
    """Duplicate keys carried two answers in one (the last won), and an age of 22.0 or 21.999999999999999
    compared equal to 22."""
    task = get_task("multidomain", domains="json", n=4, seed=0)
    sample = task.load("all")[0]
    answer = json.loads(sample["answer"])
    name, age = answer["name"], answer["age"]
    right = [sample["answer"], json.dumps({"age": age, "name": name}), f' {{ "name" : "{name}" , "age" : {age} }} ']
    wrong = [
        f'{{"name": "Bob", "name": "{name}", "age": 5, "age": {age}}}',
        f'{{"name": "{name}", "age": {age}, "age": {age}}}',
        f'{{"name": "{name}", "age": {age}.0}}',
        f'{{"name": "{name}", "age": {age - 1}.999999999999999999}}',
        f'{{"name": "{name}", "age": {age}, "extra": 1}}',
        f'{{"name": "{name}", "age": "{age}"}}',
        f'{{"name": "{name}", "age": true}}',
    ]
    assert [task.reward.score(sample["prompt"], r, sample).value for r in right] == [1.0] * len(right)
    assert [task.reward.score(sample["prompt"], r, sample).value for r in wrong] == [0.0] * len(wrong)
