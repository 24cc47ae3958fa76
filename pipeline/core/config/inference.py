"""The ``inference:`` section: the model runtime, its GPU options and the Serve deployment around it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.core.config.base import Strict


class GpuOptions(Strict):
    """onnxruntime options that only matter on the CUDA/TensorRT execution providers."""

    device_id: Annotated[int, Field(ge=0)] = 0
    io_binding: bool = Field(default=True, description="Bind inputs/outputs to device memory.")
    prefer_nhwc: bool = Field(default=True, description="CUDA EP NHWC kernels (faster convs on tensor cores).")
    cuda_graphs: bool = Field(default=False, description="Capture a CUDA graph per batch shape.")
    tensorrt: bool = Field(default=False, description="Try the TensorRT EP before CUDA.")
    tensorrt_fp16: bool = True
    tensorrt_cache_dir: str | None = Field(default=None, description=(
        "Engine cache: a folder per model, GPU and TensorRT build (default: <model cache>/tensorrt)."))


class InferenceConfig(Strict):
    """The model runtime and the Serve deployment around it."""

    model: str | None = Field(default=None, description="ONNX file; default: `vigil models fetch` cache.")
    labels: str | None = Field(default=None, description="Labels file; default: metadata or beside model.")
    scene_map: str | None = Field(default=None, description="Scene map YAML; default: built-in ImageNet map.")
    scene_model: str | None = Field(default=None, description="ONNX scene classifier used instead of the map.")
    precision: Literal["fp32", "int8"] = Field(default="fp32", description=(
        "fp32: serve inference.model as it is (an int8 model is refused: say int8 to serve one). int8: "
        "inference.model must be an int8 model made by `vigil models quantize`, whose recorded top-1 agreement "
        "with its fp32 model on frames it was not calibrated on is at least min_int8_agreement."))
    min_int8_agreement: Annotated[float, Field(ge=0, le=1, description=(
        "Lowest top-1 agreement with fp32 (on held-out frames, the worst of its frame sources, as `vigil models "
        "quantize` recorded it in the model) with which an int8 model is served; `vigil run` and every replica "
        "refuse one below it."))] = 0.99
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: Annotated[int, Field(ge=1, le=4096, description=(
        "Frames a replica reads from Redis and classifies as one batch (one round trip per shard)."))] = 32
    run_batch_size: Annotated[int, Field(ge=0, le=4096, description=(
        "Frames per model run within a batch. 0 = auto: on CPU the sub-batch measured fastest per image when "
        "the replica starts (a big batch is slower per image on most CPUs), on GPU the whole batch."))] = 0
    batch_window_ms: Annotated[float | None, Field(ge=0, le=10_000, description=(
        "How long a batch waits after its first frame for more. Default: 20 with one lane (GPU: fuller "
        "batches are cheaper per frame), 0 with several CPU lanes (a smaller batch is not slower per frame "
        "there, so waiting would only add latency)."))] = None
    replicas: Annotated[int, Field(ge=1, le=256)] = 1
    num_gpus: Annotated[float, Field(ge=0, le=8)] = 0.0
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    replica_cpus: Annotated[float, Field(gt=0, le=256, description="Ray CPUs reserved per replica.")] = 1.0
    max_frame_age_ms: Annotated[float, Field(gt=0, le=3_600_000, description=(
        "A frame that waited longer than this (since it entered Redis) when a replica would read it is not "
        "classified but dropped as `stale` and counted: results stay fresh when cameras offer more than "
        "inference takes. Frames reclaimed from a crashed replica are classified whatever their age."))] = 2000.0
    claim_idle_s: Annotated[float, Field(gt=0, description="Reclaim frames pending this long.")] = 30.0
    max_deliveries: Annotated[int, Field(ge=1, description="Dead-letter after this many tries.")] = 3
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535, description="Serve HTTP (POST /classify).")] = 8000
    http_max_body_mb: Annotated[float, Field(gt=0, le=1024, description=(
        "Largest POST /classify body; a larger one is refused (413) without being read."))] = 20.0
    http_max_pixels: Annotated[int, Field(ge=1, description=(
        "Largest image POST /classify decodes, width x height, checked from its header (413)."))] = 40_000_000
    http_token: Annotated[str | None, Field(min_length=16, description=(
        "Bearer token POST /classify requires (write ${VAR} to keep it out of the file); unset: none."))] = None
    intra_op_threads: Annotated[int, Field(ge=0, description="0 = onnxruntime default.")] = 0
    lanes: Annotated[int, Field(ge=0, le=256, description=(
        "Threads that classify a replica's batch side by side, each an equal share of it on one core. "
        "0 = auto: on CPU one per usable core (shared among the replicas of `vigil run`); on GPU 1."))] = 0
    decode_threads: Annotated[int, Field(ge=0, le=64, description=(
        "Threads that decode a batch's JPEG frames side by side (redis.frame_encoding: jpeg; about 0.4 ms a "
        "frame on one core, 200 ms for a GPU batch of 512 on one thread). 0 = auto: on one lane (GPU) one "
        "per usable core, up to 8; with several CPU lanes 1 (each lane decodes its own share)."))] = 0
    reader_threads: Annotated[int, Field(ge=0, le=64, description=(
        "On one lane (GPU), threads that read the next batches from Redis while the model classifies, each "
        "from its own share of the bus's shards (redis.urls instances or cluster shards), so reading keeps up "
        "with a GPU. 0 = auto: one per shard, up to 4; with several CPU lanes each lane reads its own."))] = 0
    gpu: GpuOptions = Field(default_factory=GpuOptions)
