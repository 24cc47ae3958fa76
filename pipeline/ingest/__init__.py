"""Ingest: cameras -> sampled, model-sized RGB frames on the frame bus. Where to look:

* which cameras a worker runs (shard, reload, runtime changes), their sampling rates and ``/readyz``:
  ``worker.py`` (:class:`~pipeline.ingest.worker.IngestWorker`), with ``shard.py`` (``--shard i/n``);
* where a camera connects, reconnects, stalls and samples at its fps: ``camera.py``
  (:class:`~pipeline.ingest.camera.Camera`), reading through ``source.py`` (OpenCV/FFmpeg, live edge)
  and ``diagnose.py`` (why an open failed);
* where a sampled frame is resized, converted to RGB, judged and published: ``frame_path.py``
  (:meth:`~pipeline.ingest.frame_path.FramePath.handle`; the resize itself is
  :func:`pipeline.core.preprocess.resize`, shared with ``/classify``); health in ``health.py``, the
  console's picture in ``preview.py``;
* how fast cameras sample under load: ``pacing.py``.

What happens is reported through observer protocols (``CameraObserver``, ``FrameObserver``,
``IngestObserver``) that :class:`pipeline.ops.metrics.IngestMetrics` implements; the process shell
(wiring, HTTP, lifecycle) is :mod:`pipeline.ops.ingest_service`.
"""
