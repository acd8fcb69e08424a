"""Time windows that follow the data: label window length, training cutoffs and their step.

A cutoff T splits time: features are computed from orders strictly before T, labels are what
the customer bought in [T, T + window). The last `window_days` of the data form the test
window, the window before it validation; training cutoffs step back from there by `step_days`,
each with its whole label window before the validation cutoff, so no training label is read
from the validation or test windows. The snapshot one day after the data ends is what serving
sees.

`tastyrec features --until DATE` builds all of these as if the data ended the day before DATE
(DataSpan.of): the test window then ends at DATE, which is how a later window is evaluated by hand
(`features --until D`, then `evaluate`) and what `tastyrec monitor` does for each window.

The defaults are derived from the data's span: a quarter of it, between 7 and 91 days, per
window (three years of synthetic data: 91 days; four months of Ta-Feng: 30), training cutoffs
a quarter window apart, as many as the history allows (at least MIN_HISTORY_DAYS of orders
before the oldest one), up to DEFAULT_MAX_TRAIN_WINDOWS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

MIN_WINDOW_DAYS, MAX_WINDOW_DAYS = 7, 91
MIN_HISTORY_DAYS = 14  # orders needed before the oldest training cutoff (features need a past)
DEFAULT_MAX_TRAIN_WINDOWS = 4


class WindowsError(ValueError):
    """The data is too short for the windows asked for (the message says by how much)."""


@dataclass(frozen=True)
class Windows:
    """Label window length, number of training cutoffs and the days between them."""

    window_days: int
    train_windows: int
    step_days: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def needed_days(self) -> int:
        """Days of data these windows need: history, the training cutoffs' spread, validation
        label window + training label window, test window."""
        return MIN_HISTORY_DAYS + (self.train_windows - 1) * self.step_days + 3 * self.window_days

    def cutoffs(self, data_end: date) -> dict[str, list[date]]:
        """split -> cutoff days (oldest first); data_end is the day after the last order."""
        test = data_end - timedelta(days=self.window_days)
        val = test - timedelta(days=self.window_days)
        newest_train = val - timedelta(days=self.window_days)
        train = [newest_train - timedelta(days=k * self.step_days) for k in range(self.train_windows)]
        return {"train": train[::-1], "val": [val], "test": [test]}

    def snapshots(self, data_end: date) -> list[datetime]:
        """Every feature snapshot (UTC midnight), oldest first: the cutoffs, then serving."""
        days = [d for split in self.cutoffs(data_end).values() for d in split] + [data_end]
        return [datetime(d.year, d.month, d.day, tzinfo=timezone.utc) for d in sorted(days)]


@dataclass(frozen=True)
class DataSpan:
    """The first order's day and the day after the last order."""

    first_day: date
    data_end: date

    @property
    def days(self) -> int:
        return (self.data_end - self.first_day).days

    @classmethod
    def of(cls, con, until: date | None = None) -> DataSpan:
        """The span of the warehouse's orders; with `until`, as if the data ended the day before
        it (data_end = until: later orders are never read, see `tastyrec features --until`)."""
        first, end = con.execute("SELECT min(order_ts)::DATE, max(order_ts)::DATE + 1 "
                                 "FROM raw_pos.order_header").fetchone()
        if first is None:
            raise WindowsError("the warehouse has no orders: there is nothing to build features from")
        if until is None:
            return cls(first, end)
        if until > end:
            raise WindowsError(f"--until {until} is after the end of the data: orders run to "
                               f"{end - timedelta(days=1)} (--until {end} or earlier)")
        if until <= first:
            raise WindowsError(f"--until {until} is not after the first order ({first}): there would be no data")
        return cls(first, until)


def resolve(span: DataSpan, window_days: int | None = None, train_windows: int | None = None,
            step_days: int | None = None) -> Windows:
    """The windows asked for, with defaults derived from the span; refused when they do not fit."""
    for name, value in (("--window-days", window_days), ("--train-windows", train_windows),
                        ("--step-days", step_days)):
        if value is not None and value < 1:
            raise WindowsError(f"{name} must be at least 1 (got {value})")
    # a quarter of the span, and never more than fits after MIN_HISTORY_DAYS (three windows)
    fits = (span.days - MIN_HISTORY_DAYS) // 3
    window = window_days or min(MAX_WINDOW_DAYS, max(MIN_WINDOW_DAYS, min(span.days // 4, fits)))
    step = step_days or max(1, window // 4)
    if train_windows is None:
        room = span.days - MIN_HISTORY_DAYS - 3 * window  # days left for spreading the cutoffs
        train_windows = max(1, min(DEFAULT_MAX_TRAIN_WINDOWS, room // step + 1))
    windows = Windows(window, train_windows, step)
    if windows.needed_days() > span.days:
        raise WindowsError(
            f"the data spans {span.days} days ({span.first_day} to {span.data_end - timedelta(days=1)}), "
            f"too short for {window}-day windows with {train_windows} training cutoff(s) {step} days apart: "
            f"that needs {windows.needed_days()} days ({MIN_HISTORY_DAYS} of history, then training, "
            f"validation and test windows). Load more data or pass a smaller --window-days / --train-windows.")
    return windows
