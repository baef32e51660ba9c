# The render worker (CPU build; the built-in engine needs no model weights).
# GPU image for the Kubernetes hq pool: docker build --build-arg EXTRAS='[neural]' -t avatar-renderer-gpu .
# (PyPI's Linux torch wheel is a CUDA build; the node's NVIDIA runtime supplies the driver).
FROM python:3.11-slim
ARG EXTRAS=""
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cli cli
COPY gateway gateway
COPY worker worker
COPY trt_build trt_build
COPY engines engines
COPY schemas schemas
RUN pip install --no-cache-dir ".${EXTRAS}"
# Owned by the runtime user, so the uploads volume (shared by gateway and workers) starts writable.
RUN mkdir -p /uploads && chown nobody /uploads
ENV LOG_LEVEL=INFO METRICS_PORT=9108 WORK_DIR=/tmp/avatar-worker
EXPOSE 9108 8080
USER nobody
CMD ["avatar-renderer", "worker"]
