"""Loading JSONL, CSV and Parquet samples, errors that say where, and the seeded split."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfgrpo.errors import ConfigError, TFGRPOError
from tfgrpo.tasks import DatasetError, DatasetNotFoundError, load_samples, split

ROWS = [
    {"id": "a", "question": "What is 1+1?", "solution": "2", "level": 1},
    {"id": "b", "question": "What is 2+2?", "solution": "4", "level": 2},
]


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {
    "data.jsonl": write_jsonl,
    "data.jsonl.gz": lambda path, rows: write_jsonl(path, rows, gz=True),
    "data.csv": write_csv,
    "data.parquet": write_parquet,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_format_loads_with_named_fields(tmp_path, name):
    path = WRITERS[name](tmp_path / name, ROWS)
    samples = load_samples(path, prompt_field="question", answer_field="solution")
    assert [(s["id"], s["prompt"], s["answer"]) for s in samples] == [
        ("a", "What is 1+1?", "2"),
        ("b", "What is 2+2?", "4"),
    ]
    assert samples[0]["question"] == "What is 1+1?"  # the original fields stay
    assert str(samples[1]["level"]) == "2"  # CSV keeps text, the others keep types


def test_ids_are_made_up_when_rows_have_none(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", [{"prompt": "p1", "answer": 1}, {"prompt": "p2", "answer": 2}])
    assert [s["id"] for s in load_samples(path)] == ["math-0", "math-1"]
    assert [s["id"] for s in load_samples(path, id_field="answer")] == ["1", "2"]


def test_a_dataset_without_answers(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "write a poem"}])
    [sample] = load_samples(path, answer_field=None)
    assert "answer" not in sample and sample["prompt"] == "write a poem"


def test_blank_lines_in_jsonl_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "answer": 1}\n\n   \n{"prompt": "b", "answer": 2}\n')
    assert [s["prompt"] for s in load_samples(path)] == ["a", "b"]


def test_format_can_be_given_explicitly(tmp_path):
    path = write_jsonl(tmp_path / "data.txt", [{"prompt": "a", "answer": 1}])
    with pytest.raises(DatasetError, match="format="):
        load_samples(path)
    assert load_samples(path, format="jsonl")[0]["prompt"] == "a"
    with pytest.raises(DatasetError, match="unknown dataset format 'xml'"):
        load_samples(path, format="xml")


def test_a_missing_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no dataset file") as caught:
        load_samples(tmp_path / "nope.jsonl")
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, TFGRPOError)
    with pytest.raises(DatasetNotFoundError, match="directory"):
        load_samples(tmp_path)


def test_a_bad_json_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "answer": 1}\n{"prompt": "b", "answer": \n')
    with pytest.raises(DatasetError, match=r"d\.jsonl, line 2: not valid JSON"):
        load_samples(path)
    path.write_text('{"prompt": "a", "answer": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DatasetError, match=r"d\.jsonl, line 2: JSON nested too deeply to read"):
        load_samples(path)


def test_a_lone_surrogate_in_a_json_line_is_named(tmp_path):
    # json.loads turns the escape into a lone surrogate, which later broke the LLM cache's key
    # and the run's fingerprint with a UnicodeEncodeError.
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "answer": 1}\n{"prompt": "b\\ud800", "answer": 2}\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl, line 2: holds a lone surrogate"):
        load_samples(path)
    path.write_text('{"prompt": "a\\ud83d\\ude00", "answer": {"x": ["\\u00e9"]}}\n')  # a pair is text
    assert load_samples(path)[0]["prompt"] == "a\U0001f600"


def test_a_json_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": 1}, ["a", "list"]])
    with pytest.raises(DatasetError, match="line 2: a JSON list, not an object"):
        load_samples(path)


def test_a_missing_prompt_field_names_the_line_and_the_fields_there_are(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": 1}, {"question": "b", "answer": 2}])
    with pytest.raises(DatasetError, match=r"line 2: no field 'prompt' \(fields: \['answer', 'question'\]\)"):
        load_samples(path)


def test_a_missing_answer_field_suggests_answer_field(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"prompt": "a", "solution": "1"}])
    with pytest.raises(DatasetError, match="line 2: no field 'answer'.*answer_field=None"):
        load_samples(path)


def test_an_empty_prompt_is_refused(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"prompt": "a", "answer": "1"}, {"prompt": " ", "answer": "2"}])
    with pytest.raises(DatasetError, match="line 3: field 'prompt' must be non-empty text"):
        load_samples(path)


def test_a_csv_row_with_extra_or_missing_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer\na,1\nb,2,surplus\n")
    with pytest.raises(DatasetError, match="line 3: more cells than the header"):
        load_samples(path)
    path.write_text("prompt,answer\na,1\nb\n")
    with pytest.raises(DatasetError, match="line 3: fewer cells than the header"):
        load_samples(path)
    path.write_text('prompt,answer\n"a,1\n')  # an unclosed quote: the rest of the file is one cell
    with pytest.raises(DatasetError, match="line 2: fewer cells than the header"):
        load_samples(path)


def test_duplicate_ids_are_refused(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"id": 7, "prompt": "a", "answer": 1}, {"id": 7, "prompt": "b", "answer": 2}]
    )
    with pytest.raises(DatasetError, match="line 2: id '7' was already used at .*line 1"):
        load_samples(path)


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    with pytest.raises(DatasetError, match="holds no samples"):
        load_samples(path)


def test_files_that_are_not_what_they_claim(tmp_path):
    bad_gz = tmp_path / "d.jsonl.gz"
    bad_gz.write_text('{"prompt": "not compressed"}\n')
    with pytest.raises(DatasetError, match="cannot be read"):
        load_samples(bad_gz)
    bad_parquet = tmp_path / "d.parquet"
    bad_parquet.write_text("not parquet")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        load_samples(bad_parquet)
    latin1 = tmp_path / "d.csv"
    latin1.write_bytes("prompt,answer\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_samples(latin1)


def samples_with_prompts(prompts: list[str]) -> list[dict]:
    return [{"id": str(i), "prompt": p} for i, p in enumerate(prompts)]


def test_split_is_deterministic_per_seed_and_keeps_order():
    samples = samples_with_prompts([f"q{i}" for i in range(100)])
    train, test = split(samples, 0.2, seed=1)
    assert (train, test) == split(samples, 0.2, seed=1)
    assert len(test) == 20 and len(train) == 80
    assert [s["id"] for s in train] == sorted((s["id"] for s in train), key=int)
    assert split(samples, 0.2, seed=2)[1] != test


def test_split_edges_and_bad_fractions():
    samples = samples_with_prompts(["a", "b", "c"])
    assert split(samples, 0.0) == (samples, [])
    assert split(samples, 1.0) == ([], samples)
    for bad in (-0.1, 1.5, "0.2"):
        with pytest.raises(ConfigError, match="test_fraction"):
            split(samples, bad)


@given(st.lists(st.sampled_from("abcdefgh"), max_size=40), st.floats(0, 1), st.integers(0, 2**32))
def test_split_never_puts_a_prompt_on_both_sides(prompts, fraction, seed):
    samples = samples_with_prompts(prompts)
    train, test = split(samples, fraction, seed)
    assert not {s["prompt"] for s in train} & {s["prompt"] for s in test}
    assert sorted(train + test, key=lambda s: int(s["id"])) == samples
