# The worker image: `python -m worker run` by default; the same image runs
# `python -m worker migrate` and `python -m producer ...` (see docker-compose.yml).
#
# Two stages: the builder installs the pinned runtime dependencies (requirements.lock)
# and the project into a virtualenv; the final image gets that virtualenv and nothing
# else from it: no pip cache, no build tools, no source tree, no tests.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock changes. Binary wheels
# only, so the build never needs a compiler (psycopg[binary] and pydantic-core ship
# manylinux wheels with everything they link).
COPY requirements.lock ./
RUN pip install --no-cache-dir --only-binary=:all: -r requirements.lock

# The project itself, without touching the locked dependencies. pyproject.toml names
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
