"""Learning-rate schedules, by steps and by training time."""

import math

from rejoinder.training.module import lr_lambda


def test_cosine_anneals_by_whichever_runs_out_first_steps_or_time():
    by_steps = lr_lambda("cosine", warmup=10, total=1000, floor=0.1)
    assert by_steps(4) == 0.5  # warm-up
    assert math.isclose(by_steps(999), 0.1)
    clock = {"used": 0.0}
    by_time = lr_lambda("cosine", 10, 1000, 0.1, elapsed=lambda: clock["used"])
    assert by_time(100) == by_steps(100)  # no time used yet: the steps decide
    clock["used"] = 0.5
    assert math.isclose(by_time(100), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    clock["used"] = 3.0  # over the budget: annealed, never beyond
    assert math.isclose(by_time(100), 0.1)
    assert by_time(5) == by_steps(5)  # warm-up is by steps either way
