"""Actions of different nodes run side by side; those of one node keep their planned order."""

from __future__ import annotations

import asyncio
import threading
import time
import typing as t

from kvtune_operator.controller.passes import execute
from kvtune_operator.controller.views import (
    Action,
    CordonNode,
    EvictVmPods,
    LabelNode,
    PatchState,
    action_target,
)


class RecordingKube:
    def __init__(self) -> None:
        self.done: list[Action] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def execute(self, action: Action) -> None:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.02)
        with self.lock:
            self.in_flight -= 1
            self.done.append(action)


def test_every_action_runs_in_order_per_node_and_concurrently_across_nodes() -> None:
    actions: list[Action] = []
    for i in range(20):
        actions += [CordonNode(f"n{i}", True), PatchState(f"n{i}"), EvictVmPods(f"n{i}")]
    actions.append(LabelNode("x", "p"))
    kube = RecordingKube()
    asyncio.run(execute(t.cast(t.Any, kube), actions, concurrency=8))
    assert sorted(map(repr, kube.done)) == sorted(map(repr, actions))
    for i in range(20):
        mine = [a for a in kube.done if action_target(a) == f"n{i}"]
        assert [type(a) for a in mine] == [CordonNode, PatchState, EvictVmPods]
    assert 1 < kube.most_in_flight <= 8
