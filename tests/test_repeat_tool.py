"""tools/test_repeat.py (``make test-repeat``): outcomes read from pytest's JUnit XML, failures
counted per test over the rounds, a red exit while any test failed in any round."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("test_repeat_tool_module", ROOT / "tools" / "test_repeat.py")
repeat = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = repeat
spec.loader.exec_module(repeat)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.a" name="test_ok" time="0.1"/>
<testcase classname="tests.a" name="test_bad" time="0.1"><failure message="boom">x</failure></testcase>
<testcase classname="tests.b" name="test_crash" time="0.1"><error message="fixture">x</error></testcase>
<testcase classname="tests.b" name="test_skip" time="0.1"><skipped message="no chromium">x</skipped></testcase>
</testsuite></testsuites>"""


def test_outcomes_and_counts(tmp_path, capsys):
    (tmp_path / "r.xml").write_text(JUNIT)
    got = repeat.outcomes(tmp_path / "r.xml")
    assert got == {"tests.a::test_ok": "passed", "tests.a::test_bad": "failed",
                   "tests.b::test_crash": "error", "tests.b::test_skip": "skipped"}
    again = {**got, "tests.a::test_bad": "passed"}
    assert repeat.summarise([got, again, got]) == 5  # test_bad twice, test_crash three times
    out = capsys.readouterr().out
    assert "3/3  tests.b::test_crash" in out and "2/3  tests.a::test_bad" in out and "test_ok" not in out
    assert repeat.summarise([again]) == 1


@pytest.mark.slow  # two pytest processes
def test_a_test_that_fails_once_in_two_rounds_is_counted(tmp_path, capsys):
    flaky = tmp_path / "test_flaky_once.py"
    flaky.write_text(f"""
from pathlib import Path
def test_flaky():
    marker = Path({str(tmp_path / 'seen')!r})
    first = not marker.exists()
    marker.touch()
    assert not first
def test_steady():
    assert True
""")
    assert repeat.main(["-n", "2", "-m", "not slow", str(flaky)]) == 1
    out = capsys.readouterr().out
    assert "1/2  " in out and "test_flaky" in out and "1 failures in total" in out and "test_steady" not in out.split("per test:")[1]
    assert repeat.main(["-n", "1", "-m", "not slow", str(flaky)]) == 0
