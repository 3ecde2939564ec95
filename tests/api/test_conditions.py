"""Condition lists: transition times kept, flips found, timestamps ignored in comparisons."""

from __future__ import annotations

import datetime

from kvtune_api import conditions as cond

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(hours=1)


def test_only_conditions_whose_status_changed_or_that_are_new_have_flipped() -> None:
    old = [cond.make("Ready", "False", "A"), cond.make("KSM", "True", "B")]
    new = [cond.make("Ready", "True", "A"), cond.make("KSM", "True", "C", "other message"),
           cond.make("PLE", "True", "D")]
    assert [c.type for c in cond.flipped(old, new)] == ["Ready", "PLE"]


def test_merge_keeps_the_transition_time_of_an_unchanged_status() -> None:
    first = cond.merge([], [cond.make("Ready", "True", "A")], T0)
    again = cond.merge(first, [cond.make("Ready", "True", "A", "new words")], T1)
    flipped = cond.merge(first, [cond.make("Ready", "False", "A")], T1)
    assert again[0].last_transition_time == T0
    assert flipped[0].last_transition_time == T1
    assert cond.equivalent(first, cond.merge([], [cond.make("Ready", "True", "A")], T1))
