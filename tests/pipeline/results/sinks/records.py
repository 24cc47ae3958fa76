"""Result records for sink tests."""

from __future__ import annotations

from pipeline.core.classification import FrameClassification, Label
from pipeline.core.model_identity import ModelIdentity
from pipeline.results.record import ResultRecord


def record(stream_id: str, label: str, score: float = 0.9, *, scene: str = "animals", i: int = 0,
           extra: list[tuple[str, float]] | None = None) -> ResultRecord:
    top = [Label(1, label, score)] + [Label(2 + j, lab, s) for j, (lab, s) in enumerate(extra or [])]
    return ResultRecord(stream=stream_id, zone="full", seq=i, frame_id=f"{1000 + i}-0", capture_ts=1000.0 + i,
                        inference_ts=1000.5 + i, model=ModelIdentity("m", "v"),
                        classification=FrameClassification(top, Label(0, scene, 0.8)),
                        queue_ms=1.0, inference_ms=2.0, batch_size=1, replica="t")
