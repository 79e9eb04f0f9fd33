"""The complexity guards' measure (tests/cost.py) tells linear work from a quadratic step, both
one written in Python (caught by the calls counted) and one hidden inside builtin calls (caught
by the CPU time)."""

from __future__ import annotations

from tests.cost import MAX_CALL_RATIO, MAX_CPU_RATIO, growth


def _text(lines: int) -> bytes:
    return b"line\r\n" * lines


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def _linear(data: bytes) -> int:
    return sum(len(line) for line in _lines(data))


def _quadratic_in_python(data: bytes) -> int:
    """Each line looks back at every line before it, one call each."""
    lines = _lines(data)
    return sum(len(earlier) for i in range(len(lines)) for earlier in lines[:i])


def _quadratic_in_builtins(data: bytes) -> int:
    """One call per line, but each scans the whole input: the calls grow linearly."""
    return sum(data.count(b"\n") for _ in _lines(data))


def test_linear_work_passes() -> None:
    seen = growth(_linear, _text(1_000), _text(8_000))
    assert seen.linear, seen


def test_a_quadratic_loop_in_python_fails_on_the_calls_alone() -> None:
    seen = growth(_quadratic_in_python, _text(100), _text(800), repeats=1)
    assert seen.calls > 2 * MAX_CALL_RATIO and not seen.linear, seen


def test_a_quadratic_step_inside_builtin_calls_fails_on_the_cpu_time() -> None:
    seen = growth(_quadratic_in_builtins, _text(1_000), _text(8_000))
    assert seen.calls < MAX_CALL_RATIO, seen  # invisible to the count
    assert seen.cpu > MAX_CPU_RATIO and not seen.linear, seen
