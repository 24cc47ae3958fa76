"""The model runtime: uint8 RGB frames in, object top-k and scene out, on CPU or GPU.

``ModelRuntime`` is an explicit context manager: ``open()`` loads the model, reads its contract,
resolves labels and the scene map, creates the onnxruntime session and warms it up; ``close()``
releases it. ``classify(frames)`` takes ``uint8 [N, H, W, 3]`` RGB whatever the model wants and
adapts them (resize if needed, channel order, layout, dtype, normalisation) to the model's contract.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from pipeline.core.classification import Classifications
from pipeline.core.config import ClassifierConfig, GpuOptions, InferenceConfig, default_engine_cache
from pipeline.core.errors import InputError, ModelError, ModelLoadError
from pipeline.core.model_identity import ModelIdentity
from pipeline.core.preprocess import resize
from pipeline.inference.classifiers import ClassifierSet, Where
from pipeline.inference.contract import ModelContract, load_onnx, read_contract
from pipeline.inference.labels import resolve_labels
from pipeline.inference.providers import create_session, plan_providers, usable_cpus
from pipeline.inference.scene import SceneMap, load_scene_map
from pipeline.inference.sub_batch import SubBatchChoice, fastest_sub_batch, random_frames

log = logging.getLogger(__name__)

Frames = npt.NDArray[np.uint8]
Probs = npt.NDArray[np.float32]
_DEFAULTS = InferenceConfig()  # the options' defaults are the config's


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model; :meth:`from_config` maps the ``inference:`` section onto it."""

    device: str = _DEFAULTS.device
    batch_size: int = _DEFAULTS.batch_size
    # The model runs a batch in sub-batches of this many frames: None = the whole batch; 0 = on CPU the size
    # measured fastest per image when the runtime opens (pipeline.inference.sub_batch), on GPU the whole batch.
    run_batch_size: int | None = None
    top_k: int = _DEFAULTS.top_k
    intra_op_threads: int = _DEFAULTS.intra_op_threads
    lanes: int = _DEFAULTS.lanes  # 0 = auto (see ModelRuntime.lanes)
    cpu_share: int = 1  # runtimes sharing this machine's cores (replicas of one `vigil run`)
    gpu: GpuOptions = field(default_factory=GpuOptions)
    labels: Path | None = None
    scene_map: Path | None = None
    scene_model: Path | None = None
    warmup: bool = True
    engine_cache_dir: str = field(default_factory=lambda: str(default_engine_cache()))  # TensorRT engines
    classifiers: tuple[ClassifierConfig, ...] = ()  # the operator's classifiers, beside the serving model

    @classmethod
    def from_config(cls, cfg: InferenceConfig, cpu_share: int = 1,
                    classifiers: Sequence[ClassifierConfig] = ()) -> RuntimeOptions:
        return cls(classifiers=tuple(classifiers), device=cfg.device, batch_size=cfg.batch_size,
                   run_batch_size=cfg.run_batch_size, top_k=cfg.top_k,
                   intra_op_threads=cfg.intra_op_threads, lanes=cfg.lanes,
                   cpu_share=cpu_share, gpu=cfg.gpu,
                   labels=Path(cfg.labels) if cfg.labels else None,
                   scene_map=Path(cfg.scene_map) if cfg.scene_map else None,
                   scene_model=Path(cfg.scene_model) if cfg.scene_model else None,
                   engine_cache_dir=cfg.gpu.tensorrt_cache_dir or str(default_engine_cache()))


def lane_share(batch_size: int, lanes: int) -> int:
    """Frames each lane classifies of a ``batch_size`` batch split over ``lanes`` (at least one)."""
    return max(1, math.ceil(batch_size / max(1, lanes)))


def softmax(x: Probs) -> Probs:
    z: Probs = x - x.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def top_k(probs: Probs, k: int) -> tuple[npt.NDArray[np.int64], Probs]:
    """Indices and scores of the ``k`` largest entries of each row, best first."""
    k = min(k, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(probs, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(part_scores, order, axis=1)


class ModelRuntime:
    """One loaded classifier.

    On CPU, ``classify`` may be called from :attr:`lanes` threads at once (onnxruntime sessions
    run concurrently), each with its share of the batch. Each call then runs single-threaded:
    independent shares on separate cores keep their speed when other processes (Redis, ingest, Ray)
    take some of the cores, whereas one batch split over every core by onnxruntime's intra-op
    threads waits at each layer for whichever thread was preempted (measured on 2 cores with 17% of
    the CPU taken by another process: 282 -> 178 images/s split over both cores by onnxruntime,
    292 -> 247 as two single-threaded halves). On GPU one call at a time.
    """

    def __init__(self, model_path: Path | str, options: RuntimeOptions | None = None) -> None:
        self.model_path = Path(model_path)
        self.options = options or RuntimeOptions()
        self._session: ort.InferenceSession | None = None
        self._contract: ModelContract | None = None
        self._scene_runtime: ModelRuntime | None = None
        self.class_names: list[str] = []
        self.scene_map: SceneMap | None = None
        self.sha256 = ""
        self.provider = ""
        self._graph: tuple[Any, Any, Any] | None = None  # CUDA-graph binding, input, output
        self._on_gpu = False
        self.lanes = 1  # classify calls that may run at once, each single-threaded on CPU (set by open)
        self.run_batch_size = 1  # frames per model run (set by open; see RuntimeOptions.run_batch_size)
        self.sub_batch: SubBatchChoice | None = None  # what was measured, when it was
        self.classifiers = ClassifierSet([], {})  # the operator's classifiers (RuntimeOptions.classifiers)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> ModelRuntime:
        if self._session is not None:
            return self
        try:
            raw = self.model_path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelLoadError(f"model file {self.model_path} does not exist; pass --model PATH, or run "
                                 "`vigil models fetch` / `vigil models export`") from exc
        except OSError as exc:
            raise ModelLoadError(f"model file {self.model_path} cannot be read: {exc.strerror}") from exc
        self.sha256 = hashlib.sha256(raw).hexdigest()
        proto = load_onnx(self.model_path)
        contract = read_contract(proto, str(self.model_path))
        self.class_names = resolve_labels(contract, self.model_path, self.options.labels)
        self.scene_map = self._load_scene(contract)
        self._contract = contract
        run = self._load_classifiers(proto, raw)
        self._session = self._create_session(run, contract)
        self._contract = contract
        self.run_batch_size = self.options.batch_size if contract.dynamic_batch else 1  # until chosen below
        if self.options.scene_model is not None:
            scene_opts = replace(self.options, scene_model=None, scene_map=None, labels=None, top_k=1)
            self._scene_runtime = ModelRuntime(self.options.scene_model, scene_opts).open()
        if self.options.warmup:
            self._warm_up()
        self.run_batch_size = self._choose_run_batch_size()
        lanes = f" ({self.lanes} lanes)" if self.lanes > 1 else ""
        runs = f", runs {self.sub_batch.describe()}" if self.sub_batch is not None else ""
        log.info("model %s (%s, sha256 %s…) on %s%s: %s%s", self.model_path.name, self.name, self.sha256[:12],
                 self.provider, lanes, contract.describe(), runs)
        return self

    def _load_classifiers(self, proto: Any, raw: bytes) -> bytes:
        """Load the configured classifiers; the model to run: the serving model with the grafted ones, if any."""
        if not self.options.classifiers:
            return raw
        own = replace(self.options, classifiers=(), scene_model=None, scene_map=None, labels=None, warmup=False)
        self.classifiers, merged = ClassifierSet.load(self.options.classifiers, proto, self.sha256,
                                                      lambda path: ModelRuntime(path, own).open())
        if merged is not None and self.options.gpu.cuda_graphs:
            log.warning("CUDA graphs are off: the classifiers' answers are extra outputs of the serving model")
            self.options = replace(self.options, gpu=self.options.gpu.model_copy(update={"cuda_graphs": False}))
        return merged.SerializeToString() if merged is not None else raw

    def _choose_run_batch_size(self) -> int:
        """See :attr:`RuntimeOptions.run_batch_size`; a model with a fixed batch of 1 runs one frame a time."""
        wanted, batch = self.options.run_batch_size, self.options.batch_size
        if not self.contract.dynamic_batch:
            return 1
        if wanted is None or (wanted == 0 and self._on_gpu):
            return batch
        if wanted > 0:
            return min(wanted, batch)
        h, w = self.input_size
        self.sub_batch = fastest_sub_batch(
            self._run, lambda n: self.prepare(random_frames(n, h, w)), batch, self.lanes)
        return self.sub_batch.size

    def close(self) -> None:
        self.classifiers.close()
        self.classifiers = ClassifierSet([], {})
        if self._scene_runtime is not None:
            self._scene_runtime.close()
            self._scene_runtime = None
        self._graph = None
        self._session = None

    def __enter__(self) -> ModelRuntime:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ properties
    @property
    def contract(self) -> ModelContract:
        if self._contract is None:
            raise ModelError("the model runtime is not open; use `with ModelRuntime(...)` or call open()")
        return self._contract

    @property
    def name(self) -> str:
        return (self._contract.name if self._contract else "") or self.model_path.stem

    @property
    def version(self) -> str:
        return (self._contract.version if self._contract else "") or self.sha256[:12]

    @property
    def identity(self) -> ModelIdentity:
        """The model's name and version, as result records and /healthz give them."""
        return ModelIdentity(self.name, self.version)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.contract.height, self.contract.width

    # ------------------------------------------------------------------ setup helpers
    def _load_scene(self, contract: ModelContract) -> SceneMap | None:
        if self.options.scene_model is not None:
            return None
        imagenet = contract.num_classes == 1000 or (contract.num_classes == 1001 and contract.background_class == 0)
        if self.options.scene_map is None and not imagenet:
            return None  # the built-in map only knows ImageNet classes
        return load_scene_map(self.options.scene_map, self.class_names, contract.background_class)

    def _create_session(self, raw: bytes, contract: ModelContract) -> ort.InferenceSession:
        plan = plan_providers(self.options.device, self.options.gpu, batch_size=self.options.batch_size,
                              input_name=contract.input_name, input_shape_tail=contract.input_shape_tail,
                              engine_root=Path(self.options.engine_cache_dir), model_bytes=raw)
        lanes = 1 if plan.wants_gpu else (self.options.lanes
                                           or max(1, usable_cpus() // max(1, self.options.cpu_share)))
        threads = self.options.intra_op_threads or (1 if lanes > 1 else 0)
        try:
            session = create_session(raw, plan, threads)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeError types
            if plan.wants_gpu and self.options.gpu.cuda_graphs:
                log.warning("CUDA graphs could not be enabled for this model (%s); running without them", exc)
                gpu = self.options.gpu.model_copy(update={"cuda_graphs": False})
                self.options = replace(self.options, gpu=gpu)
                return self._create_session(raw, contract)
            raise ModelLoadError(f"onnxruntime cannot run {self.model_path}: {exc}") from exc
        self.provider = session.get_providers()[0]
        self._on_gpu = plan.wants_gpu and self.provider != "CPUExecutionProvider"
        self.lanes = 1 if self._on_gpu else lanes
        return session

    def _warm_up(self) -> None:
        h, w = self.input_size
        sizes = {1, self.options.batch_size} if self.contract.dynamic_batch else {1}
        for n in sorted(sizes):
            self.probabilities(np.zeros((n, h, w, 3), dtype=np.uint8))

    # ------------------------------------------------------------------ inference
    def prepare(self, frames: Frames) -> npt.NDArray[Any]:
        """Adapt uint8 RGB [N, H, W, 3] frames to the model's input tensor."""
        c = self.contract
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
                or frames.shape[3] != 3:
            got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise InputError(f"classify() takes uint8 RGB frames shaped [N, H, W, 3]; got {got}")
        if frames.shape[1:3] != (c.height, c.width):
            frames = np.stack([resize(f, c.height, c.width) for f in frames]) if len(frames) else \
                np.zeros((0, c.height, c.width, 3), dtype=np.uint8)
        x: npt.NDArray[Any] = frames[..., ::-1] if c.color == "BGR" else frames
        if c.dtype != "uint8":
            if c.mean is None or c.std is None:  # read_contract sets both for float inputs
                raise ModelError(f"{self.model_path}: float input without normalisation (input_mean/input_std)")
            scale = np.float32(1 / 255.0) / np.asarray(c.std, dtype=np.float32)
            bias = -np.asarray(c.mean, dtype=np.float32) / np.asarray(c.std, dtype=np.float32)
            x = x.astype(np.float32) * scale + bias
            if c.dtype == "float16":
                x = x.astype(np.float16)
        if c.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def _run(self, x: npt.NDArray[Any]) -> list[Probs]:
        """The model's output, then the grafted classifiers' (:attr:`ClassifierSet.extra_outputs`), for input ``x``."""
        session = self._session
        if session is None:
            raise ModelError("the model runtime is closed")
        c = self.contract
        if self._on_gpu and (self.options.gpu.io_binding or self.options.gpu.cuda_graphs):
            return self._run_bound(session, x)
        outs = session.run([c.output_name, *self.classifiers.extra_outputs], {c.input_name: x})
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def _run_bound(self, session: ort.InferenceSession, x: npt.NDArray[Any]) -> list[Probs]:
        """IO-bound run on the GPU; with CUDA graphs, through fixed device buffers padded to batch_size."""
        c, dev = self.contract, self.options.gpu.device_id
        if self.options.gpu.cuda_graphs:
            b = self.options.batch_size
            if self._graph is None:
                binding = session.io_binding()
                x_dev = ort.OrtValue.ortvalue_from_shape_and_type((b, *x.shape[1:]), x.dtype, "cuda", dev)
                y_dev = ort.OrtValue.ortvalue_from_shape_and_type((b, c.num_classes), np.float32, "cuda", dev)
                binding.bind_ortvalue_input(c.input_name, x_dev)
                binding.bind_ortvalue_output(c.output_name, y_dev)
                self._graph = (binding, x_dev, y_dev)
            binding, x_dev, y_dev = self._graph
            padded = np.zeros((b, *x.shape[1:]), dtype=x.dtype)
            padded[: len(x)] = x
            x_dev.update_inplace(padded)
            session.run_with_iobinding(binding)
            return [np.asarray(y_dev.numpy()[: len(x)], dtype=np.float32)]
        binding = session.io_binding()
        binding.bind_ortvalue_input(c.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", dev))
        for name in (c.output_name, *self.classifiers.extra_outputs):
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return [np.asarray(o, dtype=np.float32) for o in binding.copy_outputs_to_cpu()]

    def _outputs(self, frames: Frames) -> list[Probs]:
        """Every output (the model's probabilities, then the grafted classifiers') for uint8 RGB frames, run in
        sub-batches of :attr:`run_batch_size`."""
        x = self.prepare(frames)
        c = self.contract
        chunk = self.run_batch_size
        if len(x) == 0:
            return [np.zeros((0, c.num_classes), dtype=np.float32)] + [
                np.zeros((0, 1), dtype=np.float32) for _ in self.classifiers.extra_outputs]
        parts = [self._run(x[i:i + chunk]) for i in range(0, len(x), chunk)]
        outs = [np.concatenate(p) if len(p) > 1 else p[0] for p in zip(*parts, strict=True)]
        if c.output_kind == "logits":
            outs[0] = softmax(outs[0])
        return outs

    def probabilities(self, frames: Frames) -> Probs:
        """Class probabilities [N, num_classes] for uint8 RGB frames [N, H, W, 3]."""
        return self._outputs(frames)[0]

    def classify(self, frames: Frames, where: Where | None = None) -> Classifications:
        """Object top-k and scene for uint8 RGB frames [N, H, W, 3], and each configured classifier's answer on
        the frames of the cameras and zones it runs on (``where``: each frame's camera and zone; None: all)."""
        t0 = time.perf_counter()
        outs = self._outputs(frames)
        run_seconds = time.perf_counter() - t0
        probs = outs[0]
        ids, scores = top_k(probs, self.options.top_k) if len(probs) else (
            np.zeros((0, self.options.top_k), np.int64), np.zeros((0, self.options.top_k), np.float32))
        scene_ids = np.zeros(0, np.int64)
        scene_scores = np.zeros(0, np.float32)
        scene_names: tuple[str, ...] = ()
        if self.scene_map is not None and len(probs):
            mass = self.scene_map.scores(probs)
            scene_ids = mass.argmax(axis=1).astype(np.int64)
            scene_scores = mass[np.arange(len(mass)), scene_ids]
            scene_names = self.scene_map.categories
        elif self._scene_runtime is not None and len(probs):
            scene = self._scene_runtime.classify(frames)
            scene_ids, scene_scores = scene.class_ids[:, 0], scene.scores[:, 0]
            scene_names = tuple(self._scene_runtime.class_names)
        return Classifications(ids, scores.astype(np.float32), scene_ids, scene_scores.astype(np.float32),
                               tuple(self.class_names), scene_names,
                               self.classifiers.answers(outs[1:], frames, where, run_seconds) if len(probs) else {})
