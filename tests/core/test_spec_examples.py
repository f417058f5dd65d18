"""Every example of the spec (`training-free-grpo-guide.md`), in Python, with real assertions.

The model is a stand-in: a deterministic function of the prompt and sample index, which is all these
examples need from it."""

from __future__ import annotations

import json
import warnings

import pytest

from support.core import FakeClock
from tfgrpo import Experience, GRPOConfig, GRPOStats, TrainingFreeGRPO


def fake_generate(prompt: str, i: int) -> str:
    return f"{prompt} :: attempt {i}"


# -- Quick Start ------------------------------------------------------------------------------------------


def test_quick_start(tmp_path, capsys):
    grpo = TrainingFreeGRPO()

    prompts = ["Write a function to"] * 8
    responses = [fake_generate(p, i) for i, p in enumerate(prompts)]
    rewards = [float(i % 3) for i in range(8)]  # 0,1,2,0,1,2,0,1: mean 0.875

    grpo.add_rollout_group(list(zip(prompts, responses)), rewards)

    exp = grpo.sample_experience()
    assert exp is not None
    print(f"Successful pattern: {exp.prompt} -> {exp.response}")
    assert capsys.readouterr().out.startswith("Successful pattern: Write a function to -> Write a function to")

    path = tmp_path / "experiences.json"
    grpo.save_to_file(path)
    saved = json.loads(path.read_text())
    kept = [r for r, reward in zip(responses, rewards) if reward > 0.875]
    assert sorted(item["response"] for item in saved) == sorted(kept)
    assert grpo.library_size() == 5


# -- Architecture: Experience -----------------------------------------------------------------------------


def test_experience_fields_and_aging():
    exp = Experience("p", "r", 0.25, timestamp=1000, metadata={"task": "t1"})
    assert (exp.prompt, exp.response, exp.advantage, exp.timestamp, exp.metadata) == (
        "p",
        "r",
        0.25,
        1000,
        {"task": "t1"},
    )
    assert exp.age_seconds(now=1000 + 3600) == 3600
    assert exp.age_seconds(now=10) == 0  # never negative (saturating, like the reference)
    assert exp.is_stale(3599, now=1000 + 3600)
    assert not exp.is_stale(3600, now=1000 + 3600)  # "older than": exactly max_age is not stale
    fresh = Experience("p", "r", 0.1)  # timestamp defaults to now
    assert fresh.age_seconds() <= 1 and not fresh.is_stale(60)


# -- Configuration ----------------------------------------------------------------------------------------


def test_default_configuration():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults are all inside the recommended ranges
        config = GRPOConfig.default()
    assert config == GRPOConfig()
    assert config.group_size == 8
    assert config.max_library_size == 10_000
    assert config.max_experience_age == 604_800
    assert config.min_advantage_threshold == 0.0
    assert config.sampling_temperature == 1.0
    assert config.use_advantage_weighting is True
    assert config.scale_advantages_by_std is False
    assert config.eviction_policy == "lowest_advantage"


def test_custom_configuration():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = GRPOConfig(
            group_size=16,
            max_library_size=50_000,
            max_experience_age=86_400 * 30,
            min_advantage_threshold=0.1,
            sampling_temperature=0.5,
            use_advantage_weighting=True,
        )
    grpo = TrainingFreeGRPO.with_config(config)
    assert grpo.config is config
    assert grpo.config.max_experience_age == 2_592_000

    # min_advantage_threshold 0.1: "only store clearly good examples"
    grpo.add_rollout_group([("p", "great"), ("p", "ok"), ("p", "bad")], [1.0, 0.55, 0.0])  # mean 0.516..
    assert [e.response for e in grpo.experience_library] == ["great"]  # ok's advantage is 0.033


# -- Use case 1: code generation with compiler feedback -------------------------------------------------------


def compiles(code: str) -> bool:
    """The simple stand-in for CompilerFeedback: does Python's own compiler accept it?"""
    try:
        compile(code, "<sample>", "exec")
    except SyntaxError:
        return False
    return True


def test_code_generation_with_compiler_feedback():
    grpo = TrainingFreeGRPO()
    coding_prompts = ["Write a function that adds", "Write a function that negates"]
    variants = ["def f(a, b):\n    return a + b\n", "def f(a, b)\n    return a + b\n", "def f(x): return -x"]
    sizes = []

    for prompt in coding_prompts:
        samples = [variants[i % 3] + f"# {prompt} {i}\n" for i in range(8)]
        rewards = [1.0 if compiles(code) else 0.0 for code in samples]
        rollouts = [(prompt, s) for s in samples]
        grpo.add_rollout_group(rollouts, rewards)
        sizes.append(grpo.library_size())

    # Per prompt 8 samples, of which 5 compile (i % 3 != 1): those 5 are stored, the rest are not.
    assert sizes == [5, 10]
    assert all(compiles(e.response) for e in grpo.experience_library)

    exp = grpo.sample_experience()
    assert exp is not None
    new_prompt = "Write a function that doubles"
    few_shot_prompt = f"Example:\n{exp.response}\n\nNow write: {new_prompt}"
    assert few_shot_prompt.startswith("Example:\ndef f(") and few_shot_prompt.endswith("Now write: " + new_prompt)


def test_compiler_feedback_is_exported_lazily():
    compiler = pytest.importorskip("tfgrpo.rewards.compiler")
    import tfgrpo

    assert tfgrpo.CompilerFeedback is compiler.CompilerFeedback


# -- Use case 2: continual learning across tasks -------------------------------------------------------------


def test_continual_learning_across_tasks():
    grpo = TrainingFreeGRPO()
    string_tasks = ["Reverse a string", "Uppercase a string"]
    file_io_tasks = ["Read file lines", "Read file as bytes", "Write file atomically"]

    for prompt in string_tasks + file_io_tasks:
        rollouts = [(prompt, fake_generate(prompt, i)) for i in range(4)]
        grpo.add_rollout_group(rollouts, [0.0, 1.0, 0.5, 0.25])  # mean 0.4375: attempts 1 and 2 stored

    task3_examples = grpo.get_experiences_for_prompt("Read file")

    assert {e.prompt for e in task3_examples} == {"Read file lines", "Read file as bytes"}
    assert len(task3_examples) == 4
    assert [e.advantage for e in task3_examples] == sorted((e.advantage for e in task3_examples), reverse=True)
    # The library retains the string patterns learnt first.
    assert {e.prompt for e in grpo.experience_library} >= set(string_tasks)
    assert grpo.library_size() == 10


# -- Use case 3: multi-domain training -------------------------------------------------------------------------

DOMAINS = {"web": ["Fetch a URL", "Parse HTML"], "math": ["Add fractions"]}


def evaluate_domain_specific(domain: str, rollouts: list[str]) -> list[float]:
    return [float(i % 2) + (0.5 if domain == "web" else 0.0) for i in range(len(rollouts))]


def test_multi_domain_training_spec_style_tagging():
    """The spec's own pattern: tag the *last* stored experience after each group, in memory."""
    grpo = TrainingFreeGRPO()
    for domain, prompts in DOMAINS.items():
        for prompt in prompts:
            rollouts = [fake_generate(prompt, i) for i in range(8)]
            rewards = evaluate_domain_specific(domain, rollouts)
            rollout_pairs = [(prompt, r) for r in rollouts]

            grpo.add_rollout_group(rollout_pairs, rewards)

            # Tag experiences with domain metadata
            if len(grpo.experience_library):
                grpo.experience_library[-1].metadata["domain"] = domain

    web_exps = [e for e in grpo.experience_library if e.metadata.get("domain") == "web"]

    # One tagged per web group, and it is the newest experience of that group.
    assert [e.prompt for e in web_exps] == ["Fetch a URL", "Parse HTML"]
    assert [e.response for e in web_exps] == [fake_generate("Fetch a URL", 7), fake_generate("Parse HTML", 7)]
    assert grpo.filter_by_metadata(domain="web") == web_exps
    assert len(grpo.filter_by_metadata(domain="math")) == 1


def test_multi_domain_training_with_group_metadata_and_tag():
    grpo = TrainingFreeGRPO()
    for domain, prompts in DOMAINS.items():
        for prompt in prompts:
            rollouts = [fake_generate(prompt, i) for i in range(8)]
            stored = grpo.add_rollout_group(
                [(prompt, r) for r in rollouts], evaluate_domain_specific(domain, rollouts), metadata={"domain": domain}
            )
            assert len(stored) == 4 and all(e.metadata == {"domain": domain} for e in stored)

    web_exps = grpo.filter_by_metadata(domain="web")
    assert len(web_exps) == 8 and {e.prompt for e in web_exps} == set(DOMAINS["web"])
    assert len(grpo.filter_by_metadata(domain="math")) == 4

    # Each experience has its own metadata: tagging one does not tag its group mates.
    first = web_exps[0]
    grpo.tag(first, reviewed="yes")
    assert grpo.filter_by_metadata(domain="web", reviewed="yes") == [first]
    assert first.metadata == {"domain": "web", "reviewed": "yes"}
    assert grpo.get_experiences_for_prompt("Fetch", where={"reviewed": "yes"}) == [first]
    assert len(grpo.get_experiences_for_prompt("", where={"domain": "web"})) == 8


# -- Use case 4: active learning ---------------------------------------------------------------------------------


def test_active_learning_uncertainty_sampling(capsys):
    grpo = TrainingFreeGRPO()
    prompt = "Prove the lemma"
    for round_ in range(3):
        rollouts = [fake_generate(prompt, 16 * round_ + i) for i in range(16)]
        rewards = [1.0 if i == 0 else 0.0 for i in range(16)]  # hard prompt: one success in 16
        grpo.add_rollout_group([(prompt, r) for r in rollouts], rewards)

        prompt_exps = grpo.get_experiences_for_prompt(prompt)
        if len(prompt_exps) < 5:
            print(f"Need more examples for prompt: {prompt}")

    assert capsys.readouterr().out.count("Need more examples for prompt: Prove the lemma") == 3
    assert len(grpo.get_experiences_for_prompt(prompt)) == 3
    assert len(grpo.get_experiences_for_prompt(prompt, k=2)) == 2


# -- Integration with a model: few-shot prompting ------------------------------------------------------------------


def generate_with_experience_library(prompt: str, grpo: TrainingFreeGRPO, n_examples: int) -> str:
    examples = grpo.sample_multiple(n_examples)
    full_prompt = ""
    for exp in examples:
        full_prompt += f"Q: {exp.prompt}\nA: {exp.response}\n\n"
    full_prompt += f"Q: {prompt}\nA:"
    return full_prompt  # the spec hands this to model.generate


def test_few_shot_prompting():
    grpo = TrainingFreeGRPO(seed=3)
    assert generate_with_experience_library("2+2?", grpo, 3) == "Q: 2+2?\nA:"  # cold start: no examples

    grpo.add_rollout_group([("1+1?", "2"), ("1+1?", "3")], [1.0, 0.0])
    grpo.add_rollout_group([("2+3?", "5"), ("2+3?", "6")], [1.0, 0.0])

    full = generate_with_experience_library("2+2?", grpo, 3)
    blocks = full.split("\n\n")
    assert len(blocks) == 4 and blocks[-1] == "Q: 2+2?\nA:"
    assert set(blocks[:3]) <= {"Q: 1+1?\nA: 2", "Q: 2+3?\nA: 5"}


# -- Monitoring: statistics ---------------------------------------------------------------------------------------

SPEC_SUMMARY = """GRPO Stats:
Total rollouts: 8000
Stored: 3200 (40.0% of rollouts)
Pruned: 500
Current library: 2700 experiences
Advantage: avg=0.234, max=2.145, min=0.001
Storage efficiency: 40.0%
Retention rate: 84.4%"""


def test_summary_reproduces_the_spec_block():
    stats = GRPOStats(
        total_rollouts=8000,
        total_stored=3200,
        total_pruned=500,
        current_library_size=2700,
        avg_advantage=0.234,
        max_advantage=2.145,
        min_advantage=0.001,
    )
    assert stats.summary() == SPEC_SUMMARY
    assert stats.storage_efficiency() == 0.4
    assert stats.retention_rate() == 2700 / 3200


def test_summary_of_a_small_library_line_by_line():
    with pytest.warns(match="max_library_size"):
        grpo = TrainingFreeGRPO(GRPOConfig(max_library_size=1), clock=FakeClock())
    grpo.add_rollout_group([("a", "good"), ("a", "bad")], [1.0, 0.0])  # stores good (+0.5)
    grpo.add_rollout_group([("b", "best"), ("b", "worst"), ("b", "mid")], [3.0, 1.0, 2.0])  # best (+1.0)
    # Capacity 1: the +0.5 experience is pruned for the +1.0 one.
    expected = """GRPO Stats:
Total rollouts: 5
Stored: 2 (40.0% of rollouts)
Pruned: 1
Current library: 1 experiences
Advantage: avg=1.000, max=1.000, min=1.000
Storage efficiency: 40.0%
Retention rate: 50.0%"""
    assert grpo.stats().summary() == expected


def test_stats_of_an_empty_library_are_well_defined():
    stats = TrainingFreeGRPO().stats()
    assert stats.summary() == (
        "GRPO Stats:\nTotal rollouts: 0\nStored: 0 (0.0% of rollouts)\nPruned: 0\nCurrent library: 0 experiences\n"
        "Advantage: avg=0.000, max=0.000, min=0.000\nStorage efficiency: 0.0%\nRetention rate: 0.0%"
    )
    values = stats.to_dict()
    assert all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in values.values())
    assert values["storage_efficiency"] == 0.0 and values["retention_rate"] == 0.0
    assert "inf" not in stats.summary() and "nan" not in stats.summary()


# -- Combining with gradient RL ----------------------------------------------------------------------------------


def test_sample_multiple_for_fine_tuning_examples():
    grpo = TrainingFreeGRPO(seed=11)
    for task in ["t1", "t2", "t3"]:
        grpo.add_rollout_group([(task, "win"), (task, "loss")], [1.0, 0.0])

    examples = grpo.sample_multiple(5)
    assert len(examples) == 5
    assert all(e.response == "win" for e in examples)
    distinct = grpo.sample_multiple(3, replace=False)
    assert sorted(e.prompt for e in distinct) == ["t1", "t2", "t3"]


# -- Best practices: "prune regularly" ---------------------------------------------------------------------------


def test_prune_regularly_removes_stale_experiences():
    clock = FakeClock()
    grpo = TrainingFreeGRPO(clock=clock)
    grpo.add_rollout_group([("old", "x"), ("old", "y")], [1.0, 0.0])
    clock.advance(grpo.config.max_experience_age + 1)
    assert grpo.library_size() == 1  # nothing prunes until asked or until the next group arrives
    assert grpo.prune() == 1
    assert grpo.library_size() == 0 and grpo.stats().total_pruned == 1


# -- API reference ------------------------------------------------------------------------------------------------


def test_api_reference_names_exist():
    import tfgrpo

    for name in ["TrainingFreeGRPO", "GRPOConfig", "Experience", "GRPOStats"]:
        assert name in tfgrpo.__all__ and getattr(tfgrpo, name) is not None
    for method in [
        "with_config",
        "add_rollout_group",
        "sample_experience",
        "sample_multiple",
        "get_experiences_for_prompt",
        "stats",
        "library_size",
        "is_at_capacity",
        "save_to_file",
        "load_from_file",
        "clear",
        "prune",
        "seed",
        "open",
        "filter_by_metadata",
        "tag",
        "remove",
    ]:
        assert callable(getattr(TrainingFreeGRPO, method)), method
    assert isinstance(TrainingFreeGRPO().experience_library[:], list)
    for method in ["age_seconds", "is_stale"]:
        assert callable(getattr(Experience, method))
    for method in ["storage_efficiency", "retention_rate", "summary"]:
        assert callable(getattr(GRPOStats, method))
    assert [f for f in GRPOStats.__dataclass_fields__][:7] == [
        "total_rollouts",
        "total_stored",
        "total_pruned",
        "current_library_size",
        "avg_advantage",
        "max_advantage",
        "min_advantage",
    ]
    assert list(GRPOConfig.__dataclass_fields__)[:6] == [
        "group_size",
        "max_library_size",
        "max_experience_age",
        "min_advantage_threshold",
        "sampling_temperature",
        "use_advantage_weighting",
    ]
