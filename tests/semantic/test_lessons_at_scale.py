"""5,000 operations in one `apply` (linear since issue 10; bench/lesson_ops.py times it): the result is
exactly what each operation implies, and the duplicate check still sees every change made before it."""

from tfgrpo.semantic import LessonLibrary, Operation


def text(kind: str, i: int) -> str:
    return f"{kind} lesson {i}: check intermediate result {i} before moving on."


def test_five_thousand_operations_give_the_expected_lessons(tmp_path):
    ops = [Operation("add", text("Original", i)) for i in range(3000)]
    ops += [Operation("update", text("Revised", i), id=f"G{i}") for i in range(1000)]
    ops += [Operation("delete", id=f"G{i}") for i in range(1000, 1500)]
    ops += [Operation("merge", text("Merged", k), ids=(f"G{1500 + 2 * k}", f"G{1501 + 2 * k}")) for k in range(500)]
    assert len(ops) == 5000
    expected = {f"G{i}": text("Revised", i) for i in range(1000)}
    expected |= {f"G{1500 + 2 * k}": text("Merged", k) for k in range(500)}
    expected |= {f"G{i}": text("Original", i) for i in range(2500, 3000)}

    with LessonLibrary(tmp_path / "lessons.db", max_words=64) as lib:
        result = lib.apply(ops)
        assert result.skipped == [] and len(result.applied) == 5000
        assert lib.lessons == expected and list(lib.lessons) == sorted(expected, key=lambda i: int(i[1:]))

        # Each text counts as taken exactly while some lesson holds it.
        again = lib.apply(
            [
                Operation("add", text("Revised", 5)),  # held by G5
                Operation("add", text("merged", 3).upper()),  # held by G1506 (same words, other case)
                Operation("add", text("Original", 5)),  # G5 was updated away from it: free again
                Operation("add", text("Original", 1000)),  # G1000 was deleted: free again
                Operation("add", text("Original", 1501)),  # G1501 was merged away: free again
                Operation("update", text("Original", 2600), id="G2599"),  # held by G2600
                Operation("update", text("Moved", 2600), id="G2600"),  # frees "Original 2600" ...
                Operation("update", text("Original", 2600), id="G2599"),  # ... which G2599 may now take
            ]
        )
        assert [s.reason for s in again.skipped] == [
            "duplicate of G5; skipped",
            "duplicate of G1506; skipped",
            "duplicate of G2600; skipped",
        ]
        assert [op.id for op in again.applied] == ["G3000", "G3001", "G3002", "G2600", "G2599"]
        assert lib["G2599"] == text("Original", 2600) and lib["G2600"] == text("Moved", 2600)

    with LessonLibrary(tmp_path / "lessons.db") as reopened:
        assert reopened.at(1) == expected and len(reopened) == 2003
