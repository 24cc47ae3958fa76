"""`vigil bench ingest VIDEO`: the ingest path's CPU cost on this machine, against FFmpeg alone.

Three measurements over the same number of video seconds, CPU time (user + system, all threads):

1. baseline: the ``ffmpeg`` program decoding the file to the null muxer (nothing else);
2. Vigil: OpenCV/FFmpeg decode of every frame + sampling at ``--fps`` + resize to the model size +
   BGR->RGB + the camera health checks + XADD to Redis, and the console's pictures (a JPEG at
   ``console.preview_width`` once a video second, SET with a TTL) (the redis-server process' own CPU is
   shown separately; the health checks' and the pictures' own shares are measured with the thread's
   CPU clock);
3. the same with keyframe-only decoding (FFmpeg ``avdiscard=nonkey``).

Reported: decoded frames/s per core for 1 and 2 and their ratio, CPU cores per camera (at the file's
native frame rate), and the CPU saved by keyframe-only mode. Figures are printed, never asserted.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.wire import FrameMessage
from pipeline.core.config import ConsoleConfig, HealthConfig, RedisConfig, VigilConfig
from pipeline.core.errors import SourceError, VigilError
from pipeline.core.keys import frames_key, preview_key
from pipeline.core.preprocess import bgr_to_rgb, resize
from pipeline.ingest.health import CameraHealth
from pipeline.ingest.preview import PreviewMaker
from pipeline.ingest.source import SourceOptions, VideoSource
from pipeline.ops.embedded_redis import EmbeddedRedis


@dataclass
class Run:
    name: str
    video_s: float
    decoded_frames: int
    published_frames: int
    cpu_s: float
    wall_s: float
    health_cpu_s: float = 0.0  # of cpu_s: the camera health checks on the sampled frames
    preview_cpu_s: float = 0.0  # of cpu_s: the console's pictures (encode and SET)
    previews: int = 0

    @property
    def frames_per_core_s(self) -> float:
        return self.decoded_frames / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def cores_per_camera(self) -> float:
        return self.cpu_s / self.video_s if self.video_s > 0 else 0.0


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds of another process of ours, from /proc (0 where /proc is unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def video_info(video: Path) -> tuple[float, int]:
    with VideoSource(SourceOptions(url=str(video), paced=False)) as src:
        if src.fps <= 0 or src.frame_count <= 0:
            raise VigilError(f"{video}: cannot tell its frame rate/count; use an MP4/MKV file")
        return src.fps, src.frame_count


def bench_ffmpeg(video: Path, loops: int, frames_per_loop: int, fps: float) -> Run:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise VigilError("ffmpeg is not on PATH: the baseline needs the ffmpeg program (apt install ffmpeg)")
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-stream_loop", str(loops - 1),
            "-i", str(video), "-an", "-f", "null", "-"]
    t0 = time.perf_counter()
    # stderr to a file, not a pipe: nobody reads a pipe while os.wait4 waits for the child's rusage.
    with tempfile.TemporaryFile() as err, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err) as proc:
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            message = err.read().decode(errors="replace").strip()[:300]
            raise VigilError(f"ffmpeg failed on {video}: {message}")
    frames = loops * frames_per_loop
    return Run("ffmpeg decode only", frames / fps, frames, 0, usage.ru_utime + usage.ru_stime, wall)


def bench_vigil(video: Path, bus: FrameBus, opts: BenchOptions, keyframes_only: bool) -> Run:
    """Decode ``opts.video_s`` seconds of the looping file as fast as possible, sample, resize, publish."""
    h, w = opts.frame_size
    source_opts = SourceOptions(url=str(video), loop=True, paced=False, keyframes_only=keyframes_only)
    decoded = published = 0
    next_sample_s, health_cpu_s, preview_cpu_s, previews = 0.0, 0.0, 0.0, 0
    health = CameraHealth(HealthConfig())  # as ingest judges every sampled frame
    console = ConsoleConfig()
    preview = PreviewMaker(console)  # as ingest keeps the console's pictures (by video time here)
    cpu0, t0 = self_cpu_s(), time.perf_counter()
    with VideoSource(source_opts) as src:
        while True:
            raw = src.read()
            if raw is None or raw.pts_s >= opts.video_s:
                break
            decoded += 1
            if preview.due(opts.stream_id, raw.pts_s):
                p0 = time.thread_time()
                bus.put_expiring(opts.stream_id, preview_key(opts.stream_id), preview.encode(raw.bgr),
                                 console.preview_ttl_s)
                preview_cpu_s += time.thread_time() - p0
                previews += 1
            if raw.pts_s + 1e-6 < next_sample_s:
                continue  # the sampler skips it: not due at the target fps
            next_sample_s += 1.0 / opts.fps
            pixels = bgr_to_rgb(resize(raw.bgr, h, w, "squash"))
            h0 = time.thread_time()
            health.observe(pixels, raw.pts_s, time.time())
            health_cpu_s += time.thread_time() - h0
            bus.publish(FrameMessage.whole(stream_id=opts.stream_id, seq=published, capture_ts_ns=raw.capture_ts_ns,
                                     pixels=pixels, source_height=raw.bgr.shape[0],
                                     source_width=raw.bgr.shape[1]))
            published += 1
    name = "vigil keyframes only" if keyframes_only else "vigil decode+sample+resize+publish"
    return Run(name, opts.video_s, decoded, published, self_cpu_s() - cpu0, time.perf_counter() - t0, health_cpu_s,
               preview_cpu_s, previews)


@dataclass
class BenchOptions:
    fps: float
    video_s: float
    frame_size: tuple[int, int]
    stream_id: str = "bench"


@contextmanager
def _redis(url: str | None) -> Iterator[tuple[str, int | None]]:
    """Yield (url, pid): the given Redis, or a throwaway embedded redis-server (its CPU is measured too)."""
    if url:
        yield url, None
        return
    with EmbeddedRedis() as r:
        yield r.url, r.pid


@dataclass(frozen=True)
class IngestBench:
    """The three runs of `vigil bench ingest` and the redis-server's CPU during the full Vigil run."""

    options: BenchOptions
    native_fps: float
    runs: list[Run]  # ffmpeg alone, vigil, vigil keyframes only
    redis_cpu_s: float


def bench_ingest(video: Path, opts: BenchOptions, redis_url: str | None) -> IngestBench:
    """Measure ffmpeg alone, then Vigil's ingest path with and without keyframe-only decoding."""
    native_fps, frame_count = video_info(video)
    loops = max(1, round(opts.video_s * native_fps / frame_count))
    opts = replace(opts, video_s=loops * frame_count / native_fps)
    baseline = bench_ffmpeg(video, loops, frame_count, native_fps)
    with _redis(redis_url) as (url, redis_pid):
        bus_opts = replace(BusOptions.from_config(VigilConfig(redis=RedisConfig(urls=[url]))), maxlen=1000)
        with FrameBus(bus_opts) as bus:
            redis_cpu0 = _proc_cpu_s(redis_pid) if redis_pid else 0.0
            try:
                full = bench_vigil(video, bus, opts, keyframes_only=False)
                redis_cpu = _proc_cpu_s(redis_pid) - redis_cpu0 if redis_pid else 0.0
                keyframes = bench_vigil(video, bus, opts, keyframes_only=True)
            except SourceError as exc:
                raise VigilError(f"bench: {exc}") from exc
            bus.client_for(opts.stream_id).delete(frames_key(opts.stream_id), preview_key(opts.stream_id))
    return IngestBench(opts, native_fps, [baseline, full, keyframes], redis_cpu)
