# The render worker (CPU build; the built-in engine needs no model weights).
FROM python:3.11-slim
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
RUN pip install --no-cache-dir .
# Owned by the runtime user, so the uploads volume (shared by gateway and workers) starts writable.
RUN mkdir -p /uploads && chown nobody /uploads
ENV LOG_LEVEL=INFO METRICS_PORT=9108 WORK_DIR=/tmp/avatar-worker
EXPOSE 9108 8080
USER nobody
CMD ["avatar-renderer", "worker"]
