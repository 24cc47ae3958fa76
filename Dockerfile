# syntax=docker/dockerfile:1
# Vigil's container images. Two targets from one file:
#
#   docker build --target cpu -t vigil:0.1.0-cpu .   # onnxruntime on the CPU
#   docker build --target gpu -t vigil:0.1.0-gpu .   # + CUDA 12 runtime and cuDNN 9 (pip wheels)
#
# Every image runs the `vigil` command as the non-root user 10001: `vigil ingest`, `vigil sink`,
# `vigil run`, `vigil models ...`; KubeRay starts `ray start` in the same image for the Serve
# application (workers.serve_app:app). The MobileNetV2 model is baked in at /opt/vigil/models
# (VIGIL_CACHE_DIR), fetched and checksum-verified at build time; mount another one and set
# inference.model to use it instead.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# build: a virtual environment with Vigil and its dependencies (wheels only; no compiler needed)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY models ./models
RUN pip install --no-cache-dir --only-binary=:all: . \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# build-gpu: the same environment plus the CUDA runtime libraries onnxruntime-gpu loads
FROM build AS build-gpu
RUN pip install --no-cache-dir --only-binary=:all: \
        "nvidia-cuda-runtime-cu12==12.6.*" "nvidia-cudnn-cu12==9.*" "nvidia-cublas-cu12==12.6.*" \
        "nvidia-cufft-cu12==11.*" "nvidia-curand-cu12==10.*" \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# model: the pinned MobileNetV2 ONNX, checksum-verified by `vigil models fetch`
FROM build AS model
ENV VIGIL_CACHE_DIR=/opt/vigil/models
RUN vigil models fetch

# ---------------------------------------------------------------------------------------------
# cpu: the runtime image (no compiler, no pip cache, no sources)
FROM ${PYTHON_IMAGE} AS cpu
ARG VIGIL_UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIGIL_CACHE_DIR=/opt/vigil/models \
    HOME=/home/vigil
RUN groupadd --gid "${VIGIL_UID}" vigil \
    && useradd --uid "${VIGIL_UID}" --gid vigil --create-home --home-dir /home/vigil --shell /bin/bash vigil
COPY --from=build /opt/venv /opt/venv
COPY --from=model /opt/vigil/models /opt/vigil/models
USER 10001
WORKDIR /home/vigil
EXPOSE 9100 8000
ENTRYPOINT ["vigil"]
CMD ["--help"]

# gpu: the cpu image with the CUDA-enabled environment (needs the NVIDIA container toolkit on the node)
FROM cpu AS gpu
COPY --from=build-gpu /opt/venv /opt/venv
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cufft/lib:/opt/venv/lib/python3.11/site-packages/nvidia/curand/lib
