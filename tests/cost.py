"""What a run of code costs, for the complexity guards: calls counted, and CPU time.

The guards (extraction of hostile shapes at ×1 and ×8 their size) once timed the wall clock,
which moves with every other tenant of a shared machine. Now they count the function calls a run
makes (cProfile: every Python 'call' and builtin 'c_call', counted in C, so cheaply), which is
deterministic and catches a quadratic loop written in Python; and since a quadratic step can hide
inside one builtin call (a regex backtracking, a slice copying the tail, a find from the start),
they also take the process's CPU time (`time.process_time`, best of N), which does not move when
other processes load the machine or while the test waits. A quadratic step is 64× at ×8 the input
on either measure; linear work is 8× or less. tests/test_cost.py checks that both measures catch
one. (Tried on extraction itself: a loop over the parts so far in `_Collector.add` made 55× the
calls on 16,000 sibling parts; a `bytes.find` per boundary, the scan `DelimiterLines` replaced,
made 8× the calls but 38× the CPU time on 4,000-deep multiparts.)
"""

from __future__ import annotations

import cProfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# At ×8 the input: linear work makes 8× the calls or fewer (every guarded shape makes 1–8.0×;
# n log n would be about 10×), a quadratic step 64×. Calls are counted exactly, so the bound can
# sit close above linear.
MAX_CALL_RATIO = 12.0
# CPU time is not counted exactly (caches, the other core's tenants sharing them): 20× leaves
# room for that and still fails a quadratic step.
MAX_CPU_RATIO = 20.0
CPU_FLOOR = 0.002  # seconds: below this a CPU time is mostly the clock's granularity and noise


def calls(run: Callable[[], Any]) -> int:
    """The function calls (Python and builtin) `run()` makes."""
    profiler = cProfile.Profile(builtins=True)
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
    return sum(entry.callcount for entry in profiler.getstats())


def cpu_seconds(run: Callable[[], Any], repeats: int = 3) -> float:
    """The least CPU time this process spent in `run()` over `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


@dataclass(frozen=True)
class Growth:
    """How much more the large input cost than the small one."""

    calls: float
    cpu: float
    detail: str

    @property
    def linear(self) -> bool:
        return self.calls < MAX_CALL_RATIO and self.cpu < MAX_CPU_RATIO


def growth(fn: Callable[[Any], Any], small: Any, large: Any, repeats: int = 3) -> Growth:
    """Call and CPU-time ratios of `fn(large)` to `fn(small)`. The CPU runs come first and
    warm imports and caches, so a first run's compiles are not counted as the input's cost."""
    # Taken in turns, so a busy moment of the machine hits both alike.
    cpu = [float("inf"), float("inf")]
    for _ in range(repeats):
        for which, arg in enumerate((small, large)):
            cpu[which] = min(cpu[which], cpu_seconds(lambda arg=arg: fn(arg), 1))
    counted = calls(lambda: fn(small)), calls(lambda: fn(large))
    floored = max(cpu[0], CPU_FLOOR), max(cpu[1], CPU_FLOOR)
    return Growth(counted[1] / counted[0], floored[1] / floored[0],
                  f"calls {counted[0]} → {counted[1]}, CPU {cpu[0]:.4f}s → {cpu[1]:.4f}s")


def assert_linear(fn: Callable[[Any], Any], small: Any, large: Any, repeats: int = 3) -> None:
    """Fail unless `fn(large)` costs no more than linearly more than `fn(small)` (sizes ×8)."""
    seen = growth(fn, small, large, repeats)
    assert seen.linear, (f"{seen.calls:.1f}× the calls (bound {MAX_CALL_RATIO}), "
                         f"{seen.cpu:.1f}× the CPU time (bound {MAX_CPU_RATIO}): {seen.detail}")
