"""One training run's budget: ``config.iterations`` steps and/or ``config.minutes`` of
wall-clock time, whether the next step still fits, and what the measured rate says about the
rest (the steps shown as the total, the ETA)."""

from __future__ import annotations


class RunBudget:
    """The step and time budget of one run, and its rate in steps per second.

    Parameters
    ----------
    total : int
        The step at which the run ends (``config.step_limit``).
    minutes : float or None
        The time budget (None: steps only).
    step_limited : bool
        Whether ``config.iterations`` limits the steps (a time budget alone has no step limit).
    start_time : float
        The clock when the run started (start-up counts against the time budget).
    first_step : int
        Steps done before the run.

    Attributes
    ----------
    rate : float or None
        Steps per second, measured from the end of the run's first step (that one carries
        start-up); None until two steps are done.
    """

    def __init__(self, total: int, minutes: float | None, step_limited: bool,
                 start_time: float, first_step: int) -> None:
        self.total = total
        self.seconds = None if minutes is None else 60.0 * minutes
        self.step_limited = step_limited
        self.start_time = start_time
        self.first_step = first_step
        self.first_step_at: float | None = None  # the first step carries start-up: no rate sample
        self.rate: float | None = None

    def out_of_time(self, now: float) -> bool:
        """Whether one more step (at the current rate) would overrun the time budget."""
        step_s = 1.0 / self.rate if self.rate else 0.0
        return self.seconds is not None and now - self.start_time + step_s > self.seconds

    def step_done(self, step: int, now: float) -> tuple[int | None, float | None]:
        """Record that ``step`` steps are done at ``now``; returns :meth:`estimate`."""
        done = step - self.first_step
        if done == 1:
            self.first_step_at = now
        elif self.first_step_at is not None and now > self.first_step_at:
            self.rate = (done - 1) / (now - self.first_step_at)
        return self.estimate(step, now - self.start_time)

    def estimate(self, step: int, elapsed: float) -> tuple[int | None, float | None]:
        """``(total steps shown, seconds left)`` from the step budget, the time budget and the
        current rate. With a time budget the total is None until the rate is measured: a
        guess from the first step, which carries the start-up, was a third of the real count
        (the bar's total jumped from 24 to 63 in the first seconds)."""
        total, budget, rate = self.total, self.seconds, self.rate
        if rate is None:
            return (total, None) if budget is None else (None, max(0.0, budget - elapsed))
        steps_left = (total - step) / rate
        if budget is None:
            return total, steps_left
        time_left = max(0.0, budget - elapsed)
        if time_left < steps_left:
            return min(total, step + int(time_left * rate)), time_left
        return total, steps_left


__all__ = ["RunBudget"]
