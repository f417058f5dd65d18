"""One small step of paper mode end to end on the bundled model (SmolLM2-135M): a model this small
answers the critic's prompts with junk, and the step must survive it, record why, and keep the library
consistent."""

import pytest

from tfgrpo.learn import LessonUpdate
from tfgrpo.llm.cache import LLMCache
from tfgrpo.loop import TrainConfig, train
from tfgrpo.semantic import LessonConfig, LessonLibrary, Operation
from tfgrpo.tasks import get_task

pytestmark = pytest.mark.model


def test_a_step_on_the_bundled_model_survives_its_output(local_backend, tmp_path):
    task = get_task("arithmetic", n=10, seed=5)
    samples = task.load("train")[:1]
    config = TrainConfig(epochs=1, batch_size=1, group_size=2, max_tokens=8, seed=0)
    lessons = LessonConfig(
        critic_max_tokens=40,
        use_ground_truth=False,  # every group goes on, so all three critic prompts are exercised
        task_objective="answer arithmetic questions with a single number",
    )
    path = tmp_path / "run.db"
    with LessonLibrary(path) as lib, LLMCache(path) as cache:
        lib.apply([Operation("add", "Compute step by step, then give only the number.")])
        before = local_backend.usage.snapshot()
        [metrics] = train(local_backend, samples, task.reward, [LessonUpdate(lib, lessons)], config, cache=cache)

        spent = local_backend.usage.snapshot() - before
        # 1 rollout request (n=2), a summary per distinct rollout (the cache asks a repeated prompt once),
        # 1 group comparison, and a consolidation only if something was proposed.
        rollouts = lib.history()[-1].context["summaries"][0]["rollouts"]
        distinct = len({r["response"] for r in rollouts})
        assert spent.requests == metrics.llm_requests == 1 + distinct + 1 + (metrics.proposed > 0)
        assert metrics.groups == 1 and metrics.global_step == 1 and lib.progress["global_step"] == 1
        version = lib.history()[-1]
        assert version.kind == "step" and version.step == 1
        assert len(version.context["summaries"][0]["rollouts"]) == 2
        # Whatever it said, every problem was recorded, and the library holds only well-formed lessons.
        for skipped in version.skipped:
            assert skipped.reason
        assert metrics.problems[: len(version.context["problems"])] == version.context["problems"]
        assert len(metrics.problems) == len(version.context["problems"]) + len(version.skipped)
        if not version.context["critiques"][0]["operations"]:
            assert version.context["critiques"][0]["problems"]  # junk, and it says so
        assert lib.lessons  # the seeded lesson is still there unless an operation validly removed it
        for lesson_id, text in lib.lessons.items():
            assert lesson_id.startswith("G") and text and len(text.split()) <= lessons.max_words

        # Run again on the same file from scratch: every call comes from the cache.
        with LessonLibrary(tmp_path / "again.db") as again:
            again.apply([Operation("add", "Compute step by step, then give only the number.")])
            before = local_backend.usage.snapshot()
            train(local_backend, samples, task.reward, [LessonUpdate(again, lessons)], config, cache=cache)
            assert (local_backend.usage.snapshot() - before).requests == 0
            assert again.lessons == lib.lessons
