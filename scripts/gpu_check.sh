#!/usr/bin/env bash
# Device check for a GPU machine (not part of CI): model runtime correctness and throughput on CUDA.
#
# Expects onnxruntime-gpu's wheel split into parts under $PARTS (carried there by earlier calls, the
# wheel is larger than one transfer), the small wheels in .gpu/p4/wheels and the shared model,
# labels and photographs in .gpu/p4/data. Prints everything to stdout and $OUT/gpu_check.log.
set -uo pipefail
PARTS=${PARTS:-/tmp/vigil-parts}
DATA=.gpu/p4/data
LOG=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$LOG") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
whl=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat "$PARTS"/part-* > "$whl"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$whl" .gpu/p4/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
NV=$(python3 -c "import nvidia, os; print(list(nvidia.__path__)[0])")
LD_LIBRARY_PATH=$(ls -d "$NV"/*/lib "$NV"/cu13/lib 2>/dev/null | paste -sd:):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
vigil() { python3 -m pipeline.cli "$@"; }
M=$DATA/mobilenet_v2_1.0_224_imagenet.onnx
echo "== classify on cuda (expect 10/10 top-1)"
vigil classify "$DATA/images" --model "$M" --device cuda --json > /tmp/cls.json
python3 - <<'PY'
import json
doc = json.load(open("/tmp/cls.json")); exp = json.load(open(".gpu/p4/data/images/expected.json"))["images"]
ok = sum(r["top_k"][0]["label"] == exp[r["image"].split("/")[-1]]["top1_label"] for r in doc["results"])
print(f"provider={doc['model']['provider']} top1 correct {ok}/{len(exp)}")
PY
echo "== device auto: one log line"
vigil classify "$DATA/images/cat.png" --model "$M" 2>&1 | grep -E "inference on|Egyptian"
echo "== fp16 conversion"
vigil models convert "$M" --fp16 --out /tmp/m16.onnx
vigil classify "$DATA/images" --model /tmp/m16.onnx --labels "$DATA/imagenet_labels.txt" --device cuda --json > /tmp/cls16.json
python3 -c "
import json; d=json.load(open('/tmp/cls16.json')); e=json.load(open('$DATA/images/expected.json'))['images']
print('fp16 top1', sum(r['top_k'][0]['label']==e[r['image'].split('/')[-1]]['top1_label'] for r in d['results']), '/ 10')"
B="--batch-sizes 1,32,256,512 --seconds 2"
echo "== bench fp32 cuda (io binding, prefer_nhwc)"; vigil bench model --model "$M" --device cuda $B
echo "== bench fp32 cuda, no prefer_nhwc"; vigil bench model --model "$M" --device cuda --no-prefer-nhwc $B
echo "== bench fp32 cuda graphs"; vigil bench model --model "$M" --device cuda --cuda-graphs $B
echo "== bench fp16 cuda"; vigil bench model --model /tmp/m16.onnx --device cuda $B
echo "== bench fp16 cuda graphs"; vigil bench model --model /tmp/m16.onnx --device cuda --cuda-graphs $B
echo "== bench cpu (16 cores)"; vigil bench model --model "$M" --device cpu --batch-sizes 1,32 --seconds 2
echo "== tensorrt requested (falls back to CUDA if TensorRT libraries are absent)"
timeout 240 python3 -m pipeline.cli bench model --model "$M" --device cuda --tensorrt --batch-sizes 32 --seconds 1 2>&1 | tail -4
echo "== export torchvision MobileNetV2 (seeded random weights) and compare with torch"
python3 -c "import torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), '/tmp/w.pth')"
vigil models export --weights /tmp/w.pth --out /tmp/tv.onnx && python3 - <<'PY'
import numpy as np, torch, torchvision, onnxruntime as ort
net = torchvision.models.mobilenet_v2(weights=None); net.load_state_dict(torch.load("/tmp/w.pth")); net.eval()
x = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1); std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
with torch.no_grad():
    ref = torch.softmax(net((torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std), 1).numpy()
s = ort.InferenceSession("/tmp/tv.onnx", providers=["CPUExecutionProvider"])
got = s.run(None, {"images": x})[0]
print("export input", [(i.name, i.type, i.shape) for i in s.get_inputs()], "max |onnx - torch| =", float(abs(got - ref).max()),
      "argmax equal:", bool((got.argmax(1) == ref.argmax(1)).all()))
PY
vigil models info /tmp/tv.onnx | head -6
exit 0
