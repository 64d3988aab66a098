# syntax=docker/dockerfile:1
# The thrifty operator image: `make image` builds it (see docs/install.md); the release workflow
# (.github/workflows/release.yml) builds it for linux/amd64 and linux/arm64 on a version tag.
#
# The base is pinned by tag; to pin by digest as well, resolve it where a registry is reachable
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`) and build with
# --build-arg PYTHON_BASE=python:3.11-slim-bookworm@sha256:<digest>.
ARG PYTHON_BASE=python:3.11-slim-bookworm

# Stage 1: the dependencies from the lock (requirements/operator.txt: pinned, with hashes, no
# matplotlib), then a wheel of thrifty built with the locked build backend and installed without
# dependencies; nothing of the build (pip caches, sources, setuptools) reaches the final image.
FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/operator.txt requirements/build.txt ./requirements/
RUN python -m venv /opt/thrifty \
 && /opt/thrifty/bin/pip install --no-compile --require-hashes -r requirements/operator.txt \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY runtime ./runtime
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/thrifty/bin/pip install --no-compile --no-deps /wheels/*.whl \
 && /opt/thrifty/bin/pip check

# Stage 2: the runtime, the same base so the venv's interpreter path stays valid.
FROM ${PYTHON_BASE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="thrifty-operator" \
      org.opencontainers.image.description="Kubernetes operator serving LLMs on GPUs at the lowest cost meeting latency targets" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /opt/thrifty /opt/thrifty
# MALLOC_ARENA_MAX=2: glibc gives each busy thread its own heap arena by default; the operator's
# worker threads then keep memory the Python heap no longer uses (bench/control_loop.md).
ENV PATH=/opt/thrifty/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    HOME=/tmp
# Non-root with a read-only root filesystem: 65532 is the conventional "nonroot" uid/gid, which
# the chart's securityContext asks for too, with readOnlyRootFilesystem: true. Nothing is written
# outside /tmp (an emptyDir in the chart): no bytecode (PYTHONDONTWRITEBYTECODE), HOME=/tmp.
# Run it the same way by hand: docker run --read-only --tmpfs /tmp <image> --help
USER 65532:65532
WORKDIR /tmp
# The operator: kopf with thrifty's handlers; settings come from THRIFTY_* variables (docs/api.md).
ENTRYPOINT ["python", "-m", "thrifty.control"]
