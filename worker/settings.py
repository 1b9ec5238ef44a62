"""Every knob of the processor, read from the environment in one place.

Nothing else in the code base reads ``os.environ``: the worker, the producer, the
Lambda handler and the demo all take a :class:`Settings`. The README documents each
field as a table; keep the two in step (``tests/test_settings.py`` checks it).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Backend(StrEnum):
    """Which database dialect the DDL and the connection factory target."""

    POSTGRES = "postgres"
    DSQL = "dsql"


class Statements(StrEnum):
    """How the engine sends one transfer (see :mod:`worker.engine.sql`)."""

    SINGLE = "single"
    PIPELINED = "pipelined"


class Settings(BaseSettings):
    """Runtime configuration. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    # --- database -----------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="libpq URL of a plain PostgreSQL (local runs, tests, docker compose).",
    )
    dsql_endpoint: str | None = Field(
        default=None,
        description="Aurora DSQL cluster endpoint, e.g. abc123.dsql.us-east-1.on.aws. "
        "Takes precedence over DATABASE_URL.",
    )
    aws_region: str | None = Field(
        default=None,
        description="Region of the DSQL cluster (parsed from the endpoint when unset) and of "
        "the SQS clients (the SDK's default chain when unset).",
    )
    dsql_user: str = Field(
        default="admin",
        description="Database role. 'admin' signs DbConnectAdmin tokens, others DbConnect.",
    )
    dsql_sslrootcert: str | None = Field(
        default=None,
        description="CA bundle for sslmode=verify-full. Unset: the Amazon Trust Services roots "
        "shipped in the package (works in any image, no OS CA store needed); a path; or "
        "'system' for the OS trust store (libpq then needs SSL_CERT_FILE/SSL_CERT_DIR).",
    )
    db_schema: str = Field(
        default="public",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Schema holding the tables (set as search_path on every connection), so "
        "one cluster can hold several environments.",
    )
    db_worker_role: str = Field(
        default="transfers_worker",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Login role `migrate` creates for the workers: SELECT/INSERT/UPDATE on "
        "exactly what a transfer touches. Workers connect as it with DSQL_USER.",
    )
    db_reader_role: str = Field(
        default="transfers_reader",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Read-only login role `migrate` creates for the producer's read commands "
        "(balance, history, stats, audit, results).",
    )
    pool_min_size: int = Field(default=2, ge=0, description="Connections kept open.")
    pool_max_size: int = Field(default=10, ge=1, description="Upper bound on connections.")
    pool_max_lifetime_s: float = Field(
        default=3000.0,
        gt=0,
        lt=3600,
        description="Retire a connection after this long (psycopg_pool jitters it by -5%); "
        "must stay under DSQL's 60-minute connection cap.",
    )
    pool_max_idle_s: float = Field(default=600.0, gt=0, description="Close idle extras.")
    pool_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest wait for a pooled connection."
    )
    connect_timeout_s: int = Field(default=10, ge=1, description="TCP + TLS + auth timeout.")

    # --- the engine ---------------------------------------------------------------
    engine_statements: Statements = Field(
        default=Statements.SINGLE,
        description="'single': the transfer as one statement (one round trip, WITH clauses "
        "that write; in DSQL's grammar, not in its user guide). 'pipelined': the same as "
        "statements the user guide documents, sent in one pipeline (also one round trip).",
    )

    transfer_batch: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Transfers on disjoint, cold accounts the container worker may apply "
        "as one statement (one round trip, one commit, each its own outcome); 1 disables. "
        "Only with ENGINE_STATEMENTS=single; the Lambda applies one at a time.",
    )
    hot_account_s: float = Field(
        default=2.0,
        ge=0,
        description="Seconds an account that conflicted stays out of batches (its "
        "transfers run alone, with their own retries).",
    )

    # --- transfer retry policy ----------------------------------------------------
    max_attempts: int = Field(
        default=30,
        ge=1,
        description="Attempts per transfer for OCC conflicts and connection faults; "
        "1 disables retry (the workshop's chapter 04).",
    )
    retry_budget_s: float = Field(
        default=15.0,
        gt=0,
        description="Wall-clock budget per transfer across all attempts; keep it well "
        "under the SQS visibility timeout.",
    )
    backoff_base_ms: float = Field(default=2.0, gt=0, description="First backoff cap.")
    backoff_max_ms: float = Field(default=200.0, gt=0, description="Largest backoff cap.")

    # --- SQS ---------------------------------------------------------------------------
    # The endpoint override is the AWS SDK's own: AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL
    # (moto or ElasticMQ locally); boto3 reads it, so it is not a field here.
    queue_url: str | None = Field(default=None, description="Transfer queue URL.")
    queue_name: str | None = Field(
        default=None, description="Transfer queue name, resolved to a URL when QUEUE_URL is unset."
    )
    dlq_url: str | None = Field(
        default=None,
        description="Dead-letter queue for malformed messages. Unset: malformed messages stay "
        "on the queue until its redrive policy moves them.",
    )
    worker_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Consumer processes in this container (one Python process tops out "
        "near one core): one per vCPU. They drain together on SIGTERM.",
    )
    worker_concurrency: int | None = Field(
        default=None, ge=1, description="Transfers in flight per process; default POOL_MAX_SIZE."
    )
    receive_wait_s: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait.")
    visibility_timeout_s: int | None = Field(
        default=None,
        ge=1,
        le=43200,
        description="Visibility timeout to assume and extend by; default: read from the queue.",
    )
    retry_visibility_s: int = Field(
        default=2,
        ge=0,
        le=43200,
        description="First delay before a transiently failed message is redelivered "
        "(worker.redelivery); grows per receive up to RETRY_VISIBILITY_MAX_S.",
    )
    retry_visibility_growth: float = Field(
        default=2.0, ge=1, le=10, description="Factor by which the redelivery delay grows."
    )
    retry_visibility_max_s: int = Field(
        default=300, ge=0, le=43200, description="Largest redelivery delay."
    )
    redelivery_horizon_s: int = Field(
        default=1800,
        ge=0,
        description="A transiently failing message keeps being redelivered for at least this "
        "long before the queue's redrive policy dead-letters it; the queue's maxReceiveCount "
        "is computed from it (worker.redelivery).",
    )
    db_probe_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="While the database is unreachable the worker holds back and probes it "
        "this often (jittered); it resumes receiving when a probe succeeds.",
    )
    drain_timeout_s: float = Field(
        default=25.0,
        gt=0,
        description="On SIGTERM, how long in-flight transfers may finish (under ECS's 30 s).",
    )
    health_file: str = Field(
        default="/tmp/transfer-worker.alive",  # noqa: S108 - a liveness marker, not a secret
        description="File the worker touches while healthy; `python -m worker health` reads it.",
    )
    health_max_age_s: float = Field(
        default=60.0, gt=0, description="Older heartbeat than this means unhealthy."
    )
    metrics_interval_s: float = Field(
        default=10.0, gt=0, description="Period of the aggregated CloudWatch EMF metrics line."
    )
    metrics_namespace: str = Field(default="DsqlTransfers", description="EMF metric namespace.")
    lambda_reserve_ms: int = Field(
        default=5000,
        ge=0,
        description="Lambda: do not start a record with less remaining time than this.",
    )

    # --- logging --------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="structlog level name.")
    log_format: str = Field(default="json", description="'json' or 'console'.")

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("POOL_MIN_SIZE must not exceed POOL_MAX_SIZE")
        return self

    @model_validator(mode="after")
    def _redelivery(self) -> Settings:
        if self.retry_visibility_s > self.retry_visibility_max_s:
            raise ValueError("RETRY_VISIBILITY_S must not exceed RETRY_VISIBILITY_MAX_S")
        return self

    @property
    def concurrency(self) -> int:
        """Transfers run at once per process: one per pooled connection by default."""
        return self.worker_concurrency or self.pool_max_size

    @property
    def backend(self) -> Backend:
        """DSQL when an endpoint is configured, plain PostgreSQL otherwise."""
        return Backend.DSQL if self.dsql_endpoint else Backend.POSTGRES
