# syntax=docker/dockerfile:1
# The thrifty operator image: `make image` builds it (see docs/install.md).
#
# The base is pinned by tag; to pin by digest as well, resolve it where a registry is reachable
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`) and build with
# --build-arg PYTHON_BASE=python:3.11-slim-bookworm@sha256:<digest>.
ARG PYTHON_BASE=python:3.11-slim-bookworm

# Stage 1: build a wheel of the package from the repository and install it with its dependencies
# into a virtual environment; nothing of the build (pip caches, sources) reaches the final image.
FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY runtime ./runtime
RUN python -m venv /opt/thrifty \
 && /opt/thrifty/bin/pip install --no-compile .

# Stage 2: the runtime, the same base so the venv's interpreter path stays valid.
FROM ${PYTHON_BASE}
LABEL org.opencontainers.image.title="thrifty-operator" \
      org.opencontainers.image.description="Kubernetes operator serving LLMs on GPUs at the lowest cost meeting latency targets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/thrifty /opt/thrifty
ENV PATH=/opt/thrifty/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# 65532 is the conventional "nonroot" uid/gid; the chart's securityContext asks for the same ids
# and a read-only root filesystem (only /tmp is writable, an emptyDir).
USER 65532:65532
WORKDIR /tmp
# The operator: kopf with thrifty's handlers; settings come from THRIFTY_* variables (docs/api.md).
ENTRYPOINT ["python", "-m", "thrifty.control"]
