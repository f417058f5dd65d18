"""CompilerFeedback and CompilerReward with the real Python parser, gcc, g++ and rustc."""

from __future__ import annotations

import pytest

import tfgrpo
from tfgrpo.errors import ConfigError
from tfgrpo.rewards import CompileResult, CompilerFeedback, CompilerReward

needs = {
    lang: pytest.mark.skipif(not CompilerFeedback.available(lang), reason=f"no {lang} compiler")
    for lang in "c cpp rust".split()
}


def test_the_top_level_name_is_this_class():
    assert tfgrpo.CompilerFeedback is CompilerFeedback


def test_good_python_compiles_cleanly():
    result = CompilerFeedback.compile("def add(a, b):\n    return a + b\n")
    assert result == CompileResult(True, 0, 0, [], "python")


def test_bad_python_reports_the_error_and_its_line():
    result = CompilerFeedback.compile("x = 1\ndef f(:\n    pass\n")
    assert (result.success, result.errors, result.warnings) == (False, 1, 0)
    assert result.messages[0].startswith("line 2: SyntaxError")


def test_python_warnings_are_counted_but_do_not_fail():
    result = CompilerFeedback.compile('x = 1 is 1\ny = "\\d"\n')
    assert (result.success, result.errors, result.warnings) == (True, 0, 2)
    assert any("SyntaxWarning" in m and m.startswith("line 1") for m in result.messages)


def test_python_code_is_not_run():
    result = CompilerFeedback.compile("import os\nos._exit(3)\nwhile True: pass\n")
    assert result.success


def test_pathological_python_fails_instead_of_crashing_the_caller():
    result = CompilerFeedback.compile("(" * 100_000 + ")" * 100_000)
    assert not result.success and result.errors == 1


@needs["c"]
def test_c_good_bad_and_warning():
    good = CompilerFeedback.compile("int add(int a, int b) { return a + b; }\n", "c")
    assert good == CompileResult(True, 0, 0, [], "c")
    bad = CompilerFeedback.compile("int main(void) {\n  return y;\n}\n", "c")
    assert (bad.success, bad.errors) == (False, 1)
    assert bad.messages[0].startswith("line 2:") and "'y' undeclared" in bad.messages[0]
    warned = CompilerFeedback.compile("int main(void) { int unused; return 0; }\n", "c")
    assert (warned.success, warned.errors, warned.warnings) == (True, 0, 1)
    assert "unused variable" in warned.messages[0]


@needs["c"]
def test_a_missing_header_is_an_error():
    result = CompilerFeedback.compile("#include <no_such_header.h>\n", "c")
    assert (result.success, result.errors) == (False, 1)
    assert "fatal error" in result.messages[0]


@needs["cpp"]
def test_cpp_is_checked_as_cpp():
    assert CompilerFeedback.compile(
        "#include <vector>\nint main() { std::vector<int> v; return v.size(); }", "cpp"
    ).success
    assert not CompilerFeedback.compile("int main() { std::vector<int> v; }", "cpp").success


@needs["rust"]
def test_rust_good_bad_and_warning():
    good = CompilerFeedback.compile("pub fn add(a: i32, b: i32) -> i32 { a + b }\n", "rust")
    assert good == CompileResult(True, 0, 0, [], "rust")
    bad = CompilerFeedback.compile('fn main() {\n    let x: i32 = "text";\n}\n', "rust")
    assert (bad.success, bad.errors, bad.warnings) == (False, 1, 0)
    assert bad.messages[0].startswith("line 2: error: mismatched types")
    warned = CompilerFeedback.compile("fn main() {\n    let x = 5;\n}\n", "rust")
    assert (warned.success, warned.errors, warned.warnings) == (True, 0, 1)
    assert warned.messages == ["line 2: warning: unused variable: `x`"]


@needs["rust"]
def test_a_rust_snippet_without_main_is_checked_as_a_library():
    assert CompilerFeedback.compile("fn helper() -> u8 { 1 }", "rust") == CompileResult(True, 0, 0, [], "rust")


def test_an_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError, match="cobol"):
        CompilerFeedback.compile("x", "cobol")
    assert not CompilerFeedback.available("cobol")


def test_compiler_reward_takes_code_from_fences():
    reward = CompilerReward()
    assert reward("p", "Here:\n```python\nprint('hi')\n```\nEnjoy, and don't forget (", {}) == 1.0
    score = reward.score("p", "```python\ndef f(:\n```", {})
    assert score.value == 0.0
    assert score.reason.startswith("does not compile: line 1: SyntaxError")
    assert score.details["errors"] == 1


@needs["c"]
def test_compiler_reward_for_c_in_a_batch():
    reward = CompilerReward("c")
    scores = reward.score_batch([("p", "```c\nint f(void) { return 1; }\n```", {}), ("p", "int f( {", {})])
    assert [s.value for s in scores] == [1.0, 0.0]


@pytest.mark.parametrize("language", ["python", "c", "cpp", "rust"])
def test_no_code_compiles_to_nothing_not_to_full_credit(language):
    """An empty answer, or comments alone, 'compiled': a model could learn to write nothing."""
    for empty in ("", "   \n", "# nothing" if language == "python" else "// nothing\n/* at all */"):
        score = CompilerReward(language).score("", empty, {})
        assert (score.value, score.reason) == (0.0, "no code (nothing but whitespace and comments)")


def test_a_compiler_is_not_given_this_processs_environment(tmp_path, monkeypatch):
    """rustc's `include_str!("/proc/self/environ")` put every variable (API keys) into the score's reason."""
    from tfgrpo.rewards.compiler import _compiler_environment

    monkeypatch.setenv("TFGRPO_TEST_SECRET", "hunter2")
    env = _compiler_environment(tmp_path)
    assert "hunter2" not in env.values() and set(env) <= {
        "PATH",
        "LC_ALL",
        "TMPDIR",
        "HOME",
        "RUSTUP_HOME",
        "CARGO_HOME",
    }
    if CompilerFeedback.available("rust"):
        code = 'const S: &str = include_str!("/proc/self/environ");\nconst _: () = panic!("{}", S);\nfn main() {}\n'
        score = CompilerReward("rust").score("", code, {})
        assert score.value == 0.0 and "hunter2" not in score.reason and "hunter2" not in str(score.details)


def test_every_block_of_the_language_must_compile():
    """Only the first fenced block was checked: a trivial one first vouched for a broken one after it."""
    decoy = "```python\npass\n```\nand the answer:\n```python\ndef f(:\n    return 1\n```"
    assert CompilerReward().score("", decoy, {}).value == 0.0
    both = "```python\nx = 1\n```\n```python\ndef f():\n    return 2\n```"
    assert CompilerReward().score("", both, {}).value == 1.0
    assert CompilerReward().score("", "```python\n# a comment\n```\n```python\ny = 2\n```", {}).value == 1.0
