"""Time windows follow the data: defaults from its span, refusals that say what is missing."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import pytest

from tastyrec.config import Workspace
from tastyrec.features.build import FeaturesError, build_features
from tastyrec.features.windows import MIN_HISTORY_DAYS, DataSpan, Windows, WindowsError, resolve


def span(days: int, first: date = date(2000, 11, 1)) -> DataSpan:
    return DataSpan(first, first + timedelta(days=days))


def test_defaults_follow_the_span() -> None:
    # three years of synthetic data: the 91-day quarters the generator's truth describes
    assert resolve(span(1096)) == Windows(window_days=91, train_windows=4, step_days=22)
    # Ta-Feng's four months: 30-day windows, cutoffs a week apart, as many as the history allows
    tafeng = resolve(span(120))
    assert (tafeng.window_days, tafeng.step_days) == (30, 7)
    assert tafeng.train_windows == (120 - MIN_HISTORY_DAYS - 3 * 30) // 7 + 1 == 3
    assert tafeng.needed_days() <= 120
    # a year: 91-day windows still fit
    assert resolve(span(365)).window_days == 91


def test_cutoffs_keep_every_label_window_before_the_next_split() -> None:
    windows = Windows(window_days=30, train_windows=3, step_days=7)
    end = date(2001, 3, 1)
    cutoffs = windows.cutoffs(end)
    assert cutoffs["test"] == [end - timedelta(days=30)]
    assert cutoffs["val"] == [end - timedelta(days=60)]
    assert cutoffs["train"] == [end - timedelta(days=d) for d in (104, 97, 90)]  # oldest first
    for cutoff in cutoffs["train"]:  # training labels [T, T + 30) end by the validation cutoff
        assert cutoff + timedelta(days=30) <= cutoffs["val"][0]
    # snapshots: every cutoff, then the day after the data (serving), in time order
    snaps = [s.date() for s in windows.snapshots(end)]
    assert snaps == sorted(cutoffs["train"] + cutoffs["val"] + cutoffs["test"] + [end])


def test_too_short_data_is_refused_with_its_length_and_what_it_needs() -> None:
    with pytest.raises(WindowsError, match=r"spans 40 days \(2000-11-01 to 2000-12-10\).*needs 104 days"):
        resolve(span(40), window_days=30)
    with pytest.raises(WindowsError, match="spans 100 days.*needs"):
        resolve(span(100), window_days=20, train_windows=5, step_days=7)  # 14 + 28 + 60 = 102
    with pytest.raises(WindowsError, match="--step-days must be at least 1"):
        resolve(span(365), step_days=0)
    # the shortest default: 7-day windows need 14 + 21 = 35 days
    assert resolve(span(35)) == Windows(7, 1, 1)
    with pytest.raises(WindowsError):
        resolve(span(34))


def test_features_record_the_windows_and_refuse_what_does_not_fit(small_ws, tmp_path) -> None:
    ws = Workspace.from_env(tmp_path)
    ws.ensure()
    shutil.copy(small_ws.warehouse, ws.warehouse)
    with pytest.raises(FeaturesError, match="spans 1096 days.*too short for 400-day windows"):
        build_features(ws, window_days=400)
    assert not (ws.feature_repo / "summary.json").exists()  # nothing half-built is left to train on
    result = build_features(ws, window_days=60, train_windows=2, step_days=30)
    assert result.windows == {"window_days": 60, "train_windows": 2, "step_days": 30}
    assert result.data_span == ["2020-01-01", "2023-01-01"]
    assert result.cutoffs == {"train": ["2022-06-05", "2022-07-05"], "val": ["2022-09-03"], "test": ["2022-11-02"]}
    assert result.snapshots[-1].startswith("2023-01-01")
