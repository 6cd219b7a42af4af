# SAM3 inference server: one image for every role.
#   web:     python manage.py serve        (daphne ASGI on SERVER_PORT, Prometheus on METRICS_PORT)
#   worker:  python manage.py run_workers  (one Celery worker per GPU in VIDEO_GPU_LIST)
#   migrate: python manage.py migrate --noinput
#
# torch/torchvision from PyPI are CUDA 13 builds on x86_64 (the CUDA runtime comes as pip
# wheels); the host only needs an NVIDIA driver new enough for CUDA 13 and the NVIDIA container
# toolkit. The same image runs on CPU (IMAGE_MODEL_DEVICE=cpu).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini is PID 1: it forwards SIGTERM to the server and reaps the worker processes that
# run_workers starts. No other system libraries are needed: opencv-python-headless, PyAV and
# torch bundle theirs (libgomp included); libcuda is mounted by the NVIDIA runtime.
# tini is not pinned (hadolint DL3008): Debian drops superseded versions from its mirrors, so a pin breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# Numeric user so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 sam3 \
 && useradd --system --uid 10001 --gid sam3 --home-dir /home/sam3 --create-home \
        --shell /usr/sbin/nologin sam3

WORKDIR /app

# Dependencies first so code changes do not reinstall torch: the same install script as
# scripts/serve.sh and .ci/run (requirements.txt at the lock's exact versions, into /app/.venv;
# it stops with pip's message when the install fails). Its stamp hashes every requirements file.
COPY requirements.txt requirements-dev.txt constraints.txt ./
COPY scripts/bootstrap.sh scripts/
RUN bash scripts/bootstrap.sh requirements.txt
ENV PATH=/app/.venv/bin:$PATH

# The code stays root-owned (read-only for the server); only the data paths are writable.
COPY . .

# The secret key is given to this one command only (settings refuse to import without a valid
# one or write one to DATA_DIR); it is not part of the image's environment.
RUN DJANGO_SECRET_KEY=build-only-dummy-secret-not-used-at-runtime-000000 \
        python manage.py collectstatic --noinput \
 && mkdir -p /app/server/sam_weights /app/var/checkpoints /tmp/sam3_uploads /tmp/sam3_outputs \
 && chown -R 10001:10001 /app/var /tmp/sam3_uploads /tmp/sam3_outputs

# Mount points (as in the deployment guide):
#   /app/server/sam_weights  SAM3 weights, read-only (config.json + model.safetensors,
#                            bpe_simple_vocab_16e6.txt.gz)
#   /tmp/sam3_uploads        UPLOAD_DIR, shared by web and workers
#   /tmp/sam3_outputs        OUTPUT_DIR, shared by web and workers
#   /app/var                 DATA_DIR of the embedded default (SQLite, generated secret key);
#                            /app/var/checkpoints holds conversions of a lone Meta sam3.pt
# (No VOLUME instruction: it would leave anonymous volumes behind one-shot containers such as
# migrate; the deployment mounts what it needs. Empty named volumes copy this ownership.)

USER 10001:10001

EXPOSE 8000 9090

# Liveness of the web role. The probe sends "Host: localhost": when ALLOWED_HOSTS is narrowed,
# keep "localhost" in it. Worker containers (no HTTP server) must disable this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; r = u.Request('http://127.0.0.1:%s/healthz' % os.environ.get('SERVER_PORT', '8000'), headers={'Host': 'localhost'}); sys.exit(0 if u.urlopen(r, timeout=4).status == 200 else 1)"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "manage.py", "serve"]
