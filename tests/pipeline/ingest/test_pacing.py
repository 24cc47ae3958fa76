"""Adaptive sampling as pure logic: a simulated inference of fixed capacity shared by cameras."""

from __future__ import annotations

import random
from collections import deque

import pytest

from pipeline.ingest.pacing import FEEDBACK_EVERY_S, QueueSignal, RateController, SamplingGovernor

TICK_S = FEEDBACK_EVERY_S
STEP_S = 0.005


class SharedInference:
    """Cameras publish at their controller's rate; one inference classifies batches of up to ``batch``
    frames at ``capacity_fps``, taking equal shares of the cameras that have frames (the reader's fair
    batches, cameras taking turns), and frames older than ``max_age_s`` are dropped as stale."""

    def __init__(self, fps: dict[str, float], capacity_fps: float, batch: int = 32, max_age_s: float = 2.0,
                 phase_seed: int | None = None) -> None:
        self.controllers = {stream_id: RateController(f) for stream_id, f in fps.items()}
        self.capacity_fps, self.batch, self.max_age_s = capacity_fps, batch, max_age_s
        self.queues: dict[str, deque[float]] = {stream_id: deque() for stream_id in fps}
        # Cameras sample in lockstep, or (phase_seed) each at its own phase, as real cameras do.
        rng = random.Random(phase_seed)
        self.carry = {stream_id: rng.random() if phase_seed is not None else 0.0 for stream_id in fps}
        self.served = dict.fromkeys(fps, 0)
        self.stale = dict.fromkeys(fps, 0)
        self.waits: list[float] = []  # how long each classified frame waited
        self.rates: list[dict[str, float]] = []  # each camera's rate at each tick
        self.now, self.busy_until, self.turn = 0.0, 0.0, 0
        self.governor = SamplingGovernor(batch_share=max(1.0, batch / len(fps)))

    def _publish(self, dt: float) -> None:
        for stream_id, ctl in self.controllers.items():
            self.carry[stream_id] += ctl.rate_fps * dt
            while self.carry[stream_id] >= 1:
                self.carry[stream_id] -= 1
                self.queues[stream_id].append(self.now)
        for stream_id, q in self.queues.items():
            while q and self.now - q[0] > self.max_age_s:
                q.popleft()
                self.stale[stream_id] += 1

    def _read_batch(self) -> int:
        order = list(self.queues)
        self.turn = (self.turn + 1) % len(order)
        order = order[self.turn:] + order[:self.turn]
        taken = 0
        while taken < self.batch and any(self.queues.values()):
            for stream_id in order:
                if self.queues[stream_id] and taken < self.batch:
                    self.waits.append(self.now - self.queues[stream_id].popleft())
                    self.served[stream_id] += 1
                    taken += 1
        return taken

    def tick(self) -> None:
        stale_before = dict(self.stale)
        for _ in range(round(TICK_S / STEP_S)):
            self.now += STEP_S
            self._publish(STEP_S)
            if self.now >= self.busy_until:
                taken = self._read_batch()
                self.busy_until = self.now + taken / self.capacity_fps
        signals = {stream_id: QueueSignal(len(q), self.now - q[0] if q else 0.0,
                                          self.stale[stream_id] - stale_before[stream_id])
                   for stream_id, q in self.queues.items()}
        self.governor.update(self.controllers, signals)
        self.rates.append({stream_id: ctl.rate_fps for stream_id, ctl in self.controllers.items()})

    def mean_rate(self, stream_id: str) -> float:
        """The camera's sampling rate averaged over the last run."""
        return sum(r[stream_id] for r in self.rates) / len(self.rates)

    def run(self, seconds: float) -> dict[str, int]:
        """Run for ``seconds``; return the frames classified per camera meanwhile."""
        before = dict(self.served)
        self.waits, self.rates = [], []
        for _ in range(int(seconds / TICK_S)):
            self.tick()
        return {stream_id: n - before[stream_id] for stream_id, n in self.served.items()}


@pytest.mark.parametrize("capacity_fps", [250.0, 110.0])  # 120% and 270% of the 300 frames/s offered
def test_equal_fps_get_equal_shares_of_an_overloaded_inference(capacity_fps: float) -> None:
    sim = SharedInference({f"c{i}": 25.0 for i in range(12)}, capacity_fps=capacity_fps)
    sim.run(30)  # settle
    served = sim.run(60)
    assert max(served.values()) / min(served.values()) <= 1.1, served
    assert sum(served.values()) >= 0.9 * capacity_fps * 60  # no collapse: inference stays busy
    waits = sorted(sim.waits)
    assert waits[int(0.95 * len(waits))] <= 0.5  # fresh: queues are the feedback's, not maxlen's
    assert sum(sim.stale.values()) == 0
    assert sum(sim.mean_rate(stream_id)
               for stream_id in sim.controllers) <= 1.1 * capacity_fps  # ingest samples no surplus


@pytest.mark.parametrize("capacity_fps", [180.0, 90.0])  # 440% and 890% of the 800 frames/s offered
def test_many_cameras_at_their_own_phases_keep_inference_busy(capacity_fps: float) -> None:
    # 32 cameras share a batch of 32: one frame each a cycle. With their own phases some camera always has
    # two frames waiting for a moment, which must not read as congestion (it did, and inference idled).
    sim = SharedInference({f"c{i}": 25.0 for i in range(32)}, capacity_fps=capacity_fps, phase_seed=7)
    sim.run(30)  # settle (the first second at 4-9x overload leaves frames to go stale)
    stale_before = sum(sim.stale.values())
    served = sim.run(60)
    assert sum(served.values()) >= 0.95 * capacity_fps * 60
    assert max(served.values()) / min(served.values()) <= 1.1, served
    waits = sorted(sim.waits)
    assert waits[int(0.95 * len(waits))] <= 0.5
    assert sum(sim.stale.values()) == stale_before


def test_shares_follow_the_configured_fps() -> None:
    sim = SharedInference({"slow": 10.0, "fast": 20.0}, capacity_fps=15.0, batch=4)
    sim.run(30)
    served = sim.run(120)
    assert 1.6 <= served["fast"] / served["slow"] <= 2.4, served


def test_rates_fall_under_overload_and_climb_back_when_capacity_returns() -> None:
    sim = SharedInference({"a": 25.0, "b": 25.0}, capacity_fps=20.0, batch=8)
    sim.run(10)
    served = sim.run(20)
    assert all(sim.mean_rate(stream_id) < 15 for stream_id in served), [sim.mean_rate(s) for s in served]
    assert sum(served.values()) >= 0.9 * 20 * 20
    sim.capacity_fps = 500.0  # e.g. the GPU is back
    sim.run(15)
    assert all(ctl.rate_fps == 25.0 for ctl in sim.controllers.values())
    assert sum(sim.stale.values()) == 0


def test_under_capacity_nothing_changes() -> None:
    sim = SharedInference({f"c{i}": 10.0 for i in range(8)}, capacity_fps=200.0)
    sim.run(30)
    assert all(ctl.rate_fps == 10.0 for ctl in sim.controllers.values())
    assert sum(sim.stale.values()) == 0


def test_a_controller_never_exceeds_its_fps_nor_falls_below_its_floor() -> None:
    ctl = RateController(5.0)
    for _ in range(100):
        ctl.back_off()
    assert ctl.rate_fps == pytest.approx(0.2)
    for _ in range(100):
        ctl.speed_up()
    assert ctl.rate_fps == 5.0
    assert RateController(0.1).back_off() == 0.1  # a camera slower than the floor keeps its own rate
    with pytest.raises(ValueError, match="fps must be > 0"):
        RateController(0.0)


def test_a_new_fps_keeps_the_rate_at_the_same_fraction_of_the_configured_one() -> None:
    ctl = RateController(20.0)
    ctl.back_off()
    ctl.back_off()  # 20 x 0.8 x 0.8 = 12.8: 64% of fps
    assert ctl.set_fps(10.0) == pytest.approx(6.4) and ctl.fps == 10.0
    assert ctl.set_fps(40.0) == pytest.approx(25.6)
    full = RateController(5.0)
    assert full.set_fps(2.0) == 2.0 and full.set_fps(8.0) == 8.0
    with pytest.raises(ValueError, match="fps must be > 0"):
        full.set_fps(0.0)
