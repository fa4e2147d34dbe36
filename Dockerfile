# The spinetrack image: the app's pinned stack (docs/stack.md) in /opt/venv, this checkout in /app.
# CPU torch from the public PyTorch index by default. GPU variant (docs/deployment.md):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t spinetrack:gpu .
# and run it with the NVIDIA container toolkit (`gpus: all` in compose, or docker run --gpus all).
FROM python:3.11.7-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SPINETRACK_CODE_DIR=/app \
    SPINETRACK_HOME=/data/spinetrack \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    FIFTYONE_DO_NOT_TRACK=true

# OpenCV and OpenSim need these at run time; the full python image has the compiler xtcocotools needs
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# dependencies first (a code change does not reinstall them): torch from the chosen index, then
# scripts/bootstrap.sh installs the rest in its fixed order into $VENV
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY scripts/ scripts/
RUN python -m venv "$VENV" \
    && "$VENV/bin/python" -m pip install --no-cache-dir -q "setuptools<81" wheel "numpy==2.2.6" \
    && "$VENV/bin/python" -m pip install --no-cache-dir -q --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
COPY schemas/ schemas/
COPY synthetic/ synthetic/
COPY pipeline/ pipeline/
COPY annotation/ annotation/
COPY flows/ flows/
COPY prefect.yaml docker-compose.yml ./
RUN PIP_NO_CACHE_DIR=1 VENV="$VENV" bash scripts/bootstrap.sh \
    && "$VENV/bin/python" -m pip install --no-cache-dir -q -c requirements/lock.txt -e ".[postgres]" \
    && "$VENV/bin/spinetrack" --help >/dev/null

RUN useradd --create-home --uid 1000 spinetrack && mkdir -p /data && chown spinetrack /data
USER spinetrack
VOLUME ["/data"]
CMD ["spinetrack", "--help"]
