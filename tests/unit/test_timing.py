"""tests/timing.py, the plugin every tier loads, run on a small test file of its own."""

import pytest

pytest_plugins = ["pytester"]


def test_modules_times_and_measured_lines_of_passing_tests_are_summed_up(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_probe="""
        def test_passes():
            print("noise")
            print("  [measured] probe took 1.5 s")

        def test_fails():
            print("[measured] never reported")
            assert False
    """)  # fmt: skip
    result = pytester.runpytest("-p", "tests.timing")
    result.assert_outcomes(passed=1, failed=1)
    summary = result.stdout.str().split("time per module", 1)[1]
    assert "test_probe.py" in summary and "processors busy" in summary
    measured = summary.split("= measured =", 1)[1]
    assert "[measured] probe took 1.5 s" in measured
    assert "never reported" not in measured and "noise" not in measured
