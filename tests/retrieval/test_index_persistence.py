"""The BM25 and HNSW indexes saved beside a library file (`<library>.index`) and taken over by the next
retriever: the same results from a new process without rebuilding or embedding anything, a library
that changed since the save brought up to date (never a removed text returned), and a file for another
embedder or a damaged one rebuilt, not used. Real MiniLM, real SQLite, real faiss, a real subprocess."""

import json
import subprocess
import sys
import textwrap

import pytest

from tfgrpo import GRPOConfig, TrainingFreeGRPO
from tfgrpo.retrieval import Retriever

pytest.importorskip("faiss")

VERBS = ["Read", "Write", "Parse", "Sort", "Merge", "Split", "Count", "Compress"]
OBJECTS = ["file lines", "a csv table", "json records", "a url", "log entries", "a string", "dates", "numbers"]
OBJECTS += ["tar archives", "html pages", "xml nodes", "user emails"]
PROMPTS = [f"{v} {o}" for v in VERBS for o in OBJECTS]  # 96 distinct prompts (k=10 goes through HNSW above 80)
THRESHOLD = 16  # above this many texts semantic search goes through the HNSW graph
QUERIES = ["Read file lines", "Sort numbers", "Parse json records", "Compress log entries"]  # library prompts
LEXICAL_QUERIES = ["read a file", "csv table", "merge json"]


def add(grpo, prompts):
    grpo.add_rollout_groups(([(p, f"{p} :: good"), (p, f"{p} :: bad")], [1.0, 0.0], None) for p in prompts)


def results(grpo) -> dict:
    """query -> [(prompt, score)] of the top 5 (one per prompt: the better of its two experiences)."""
    out = {}
    for mode, queries in (("semantic", QUERIES), ("lexical", LEXICAL_QUERIES)):
        for q in queries:
            found = grpo.get_experiences_for_prompt(q, k=10, mode=mode, with_scores=True)
            ranked = [(e.prompt, round(score, 4)) for e, score in found if e.response.endswith("good")]
            out[f"{mode}:{q}"] = ranked[:5]
    return out


def same_ranking(a: dict, b: dict) -> bool:
    """The same scores, and the same prompts above the last score (prompts tied with the last one may be
    chosen either way: which of them come first depends on the order the texts were indexed in)."""
    for key in a.keys() | b.keys():
        x, y = (
            a.get(key, []),
            b.get(key, []),
        )
        if [s for _, s in x] != [s for _, s in y]:
            return False
        last = x[-1][1] if x else None
        if {p for p, s in x if s != last} != {p for p, s in y if s != last}:
            return False
    return True


def prompts_of(found: dict) -> set:
    return {p for ranked in found.values() for p, _ in ranked}


@pytest.fixture
def saved(tmp_path, minilm):
    """A library of 96 prompts whose HNSW graph was built (and so saved) and whose BM25 index was saved."""
    path = tmp_path / "lib.db"
    grpo = TrainingFreeGRPO.open(path, GRPOConfig(max_library_size=1000), clock=lambda: 1_700_000_000)
    add(grpo, PROMPTS)
    retriever = grpo.enable_retrieval(minilm, approximate_threshold=THRESHOLD)
    expected = results(grpo)
    assert retriever._vectors.builds == 1 and retriever.index_path.exists()  # saved after the build
    retriever.save_indexes()  # now with the BM25 postings too (too small to be saved on its own)
    grpo.close()
    return path, expected


def test_a_new_process_takes_the_indexes_over(saved):
    path, expected = saved
    script = textwrap.dedent(
        f"""
        import json
        from tfgrpo import TrainingFreeGRPO
        from tfgrpo.retrieval import Retriever
        sys_path = {str(path)!r}
        grpo = TrainingFreeGRPO.open(sys_path)
        retriever = grpo.enable_retrieval(approximate_threshold={THRESHOLD})
        restored = retriever.restored_rows
        found = {{}}
        for mode, queries in (("semantic", {QUERIES!r}), ("lexical", {LEXICAL_QUERIES!r})):
            for q in queries:
                hits = grpo.get_experiences_for_prompt(q, k=10, mode=mode, with_scores=True)
                ranked = [(e.prompt, round(s, 4)) for e, s in hits if e.response.endswith("good")]
                found[mode + ":" + q] = ranked[:5]
        print(json.dumps({{
            "found": found,
            "restored": restored,
            "builds": retriever._vectors.builds,
            "approximate": retriever._vectors.approximate(),
            "model_loaded": retriever.embedder._model is not None,
        }}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert {k: [tuple(x) for x in v] for k, v in out["found"].items()} == expected  # the very same, ties too
    assert out["restored"] == len(PROMPTS)
    assert out["approximate"] and out["builds"] == 0  # the saved graph answered; none was built
    assert not out["model_loaded"]  # nothing was embedded: the queries' vectors came from the saved graph


def test_a_library_changed_since_the_save_is_brought_up_to_date(saved, minilm):
    path, _ = saved
    removed = {p for p in PROMPTS if p.startswith(("Read", "Sort"))}
    new = ["Read file lines backwards", "Sort numbers in place", "Deduplicate numbers", "Read a csv table"]
    with TrainingFreeGRPO.open(path, clock=lambda: 1_700_000_000) as grpo:  # no retriever: it does not see this
        for exp in [e for e in grpo.experience_library if e.prompt in removed]:
            grpo.remove(exp)
        add(grpo, new)

    with TrainingFreeGRPO.open(path, clock=lambda: 1_700_000_000) as grpo:
        retriever = grpo.enable_retrieval(minilm, approximate_threshold=THRESHOLD)
        assert retriever._vectors._mapped is not None  # the graph is a view of the file, not read into memory
        taken_over = results(grpo)  # (the new texts are added to a copy of it: faiss cannot grow a view)
        assert retriever.restored_rows == len(PROMPTS) and retriever._vectors.builds == 0
    with TrainingFreeGRPO.open(path, clock=lambda: 1_700_000_000) as grpo:
        grpo.enable_retrieval(minilm, approximate_threshold=THRESHOLD, persist_indexes=False)
        rebuilt = results(grpo)

    assert same_ranking(taken_over, rebuilt), (taken_over, rebuilt)
    assert not prompts_of(taken_over) & (removed - set(new))
    assert taken_over["semantic:Read file lines"][0][0] == "Read file lines backwards"
    assert taken_over["semantic:Sort numbers"][0][0] == "Sort numbers in place"


def test_an_index_for_another_embedder_is_not_used(saved, counting):
    path, expected = saved

    class Renamed:
        name = "st:another-model"  # same vectors, but the saved graph must not be taken for its own

        def embed(self, texts):
            return counting.embed(texts)

    with TrainingFreeGRPO.open(path) as grpo:
        retriever = grpo.enable_retrieval(Renamed(), approximate_threshold=THRESHOLD)
        assert same_ranking(results(grpo), expected)
        assert retriever._vectors.builds == 1  # rebuilt from its own vectors
        assert counting.embedded >= len(PROMPTS)  # every prompt embedded under the new name


def test_a_damaged_index_is_rebuilt_with_a_warning(saved, minilm):
    path, expected = saved
    index = path.with_name(path.name + ".index")
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with TrainingFreeGRPO.open(path) as grpo:
        with pytest.warns(RuntimeWarning, match="ignoring the saved retrieval index"):
            retriever = grpo.enable_retrieval(minilm, approximate_threshold=THRESHOLD)
        assert retriever.restored_rows == 0
        assert same_ranking(results(grpo), expected)
        assert retriever._vectors.builds == 1
    with TrainingFreeGRPO.open(path) as grpo:  # the rebuilt graph was saved again, whole
        retriever = grpo.enable_retrieval(minilm, approximate_threshold=THRESHOLD)
        assert retriever.restored_rows == len(PROMPTS)
        assert same_ranking(results(grpo), expected) and retriever._vectors.builds == 0


def test_a_library_without_a_file_saves_only_where_told(tmp_path, minilm):
    grpo = TrainingFreeGRPO()
    add(grpo, PROMPTS[:8])
    retriever = grpo.enable_retrieval(minilm)
    assert retriever.index_path is None
    with pytest.raises(Exception, match="no file to save the retrieval index beside"):
        retriever.save_indexes()
    grpo.get_experiences_for_prompt("csv", mode="lexical")
    target = retriever.save_indexes(tmp_path / "mine.index")
    other = TrainingFreeGRPO()
    add(other, PROMPTS[:8])
    again = other.enable_retrieval(retriever=Retriever(minilm, index_path=target))
    assert again.restored_rows == 8
    assert same_ranking(results(other), results(grpo))


def test_a_graph_taken_over_and_then_mostly_removed_is_rebuilt_from_its_vectors(saved, minilm):
    path, _ = saved
    kept = [p for p in PROMPTS if p.startswith(("Write", "Parse", "Merge", "Split"))]
    with TrainingFreeGRPO.open(path, clock=lambda: 1_700_000_000) as grpo:
        for exp in [e for e in grpo.experience_library if e.prompt not in kept]:
            grpo.remove(exp)
        add(grpo, [f"{p} again" for p in kept[:40]])  # (k=10 goes through the graph above 80 texts)
    with TrainingFreeGRPO.open(path, clock=lambda: 1_700_000_000) as grpo:
        retriever = grpo.enable_retrieval(minilm, approximate_threshold=THRESHOLD)
        assert retriever.restored_rows == len(PROMPTS)
        taken_over = results(grpo)
        assert retriever._vectors.builds == 1  # half the graph was dead: rebuilt from the vectors it held
    with TrainingFreeGRPO.open(path, clock=lambda: 1_700_000_000) as grpo:
        grpo.enable_retrieval(minilm, approximate_threshold=THRESHOLD, persist_indexes=False)
        assert same_ranking(taken_over, results(grpo))
    assert prompts_of(taken_over) <= set(kept) | {f"{p} again" for p in kept}
