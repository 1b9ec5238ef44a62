# The worker image: `python -m worker run` by default; the same image runs
# `python -m worker migrate` and `python -m producer ...` (see docker-compose.yml).
#
# Two stages: the builder installs the pinned runtime dependencies (requirements.lock)
# and the project into a virtualenv; the final image gets that virtualenv and nothing
# else from it: no pip cache, no build tools, no source tree, no tests.
#
# The base image is pinned by digest (the multi-arch index, so amd64 and arm64 builds
# both resolve it): a moved tag cannot change what we ship. To update, resolve the tag
# and paste the new digest here (docs/deploy.md, "Updating the base image"):
#   docker buildx imagetools inspect python:3.12-slim --format '{{json .Manifest.Digest}}'
# or override it for one build with --build-arg PYTHON_IMAGE=python:3.12-slim@sha256:...
# checkov:skip=CKV_DOCKER_7: FROM takes this ARG, whose default is pinned by digest
ARG PYTHON_IMAGE=python:3.12.14-slim-trixie@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock changes. Binary wheels
# only, so the build never needs a compiler (psycopg[binary] and pydantic-core ship
# manylinux wheels with everything they link); every file is checked against the
# lock's sha256 hashes, so a replaced wheel on the index fails the build.
COPY requirements.lock ./
RUN pip install --no-cache-dir --only-binary=:all: --require-hashes -r requirements.lock

# The project itself, without touching the locked dependencies. (pip's build isolation
# fetches the build backend, setuptools, for this step: it builds our own source and is
# not copied into the final image, but it is not hash-pinned.) pyproject.toml names
# README.md as the long description, so the build needs it.
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY producer ./producer
RUN pip install --no-cache-dir --no-deps . \
    && python -m pip check


FROM ${PYTHON_IMAGE}

# PYTHONSAFEPATH: `python -m` must not import from the working directory.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PYTHONSAFEPATH=1 \
    PATH=/opt/venv/bin:$PATH

# A fixed, unprivileged uid/gid; --no-log-init keeps a high uid from bloating
# /var/log/faillog.
RUN groupadd --system --gid 10001 transfers \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin transfers

COPY --from=builder /opt/venv /opt/venv

# The code lives in the virtualenv (root-owned, read-only to the worker); the working
# directory is empty and not writable.
WORKDIR /app
USER 10001:10001

# The worker touches HEALTH_FILE (default /tmp/transfer-worker.alive) while its pollers
# run; `health` fails once the heartbeat is older than HEALTH_MAX_AGE_S (60 s).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "worker", "health"]

# ECS and `docker stop` send SIGTERM: the worker stops receiving and drains in-flight
# transfers for up to DRAIN_TIMEOUT_S (25 s), inside ECS's default 30 s stopTimeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
