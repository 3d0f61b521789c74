"""Configuration from the environment (TRAINYARD_*), one Settings class per service."""

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_MONGO_OPTIONS = "retryWrites=false&maxIdleTimeMS=240000"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    # One URL, or several comma-separated (the nodes of a NATS cluster: the
    # client fails over between them).
    nats_url: str = "nats://127.0.0.1:4222"
    # Copies of the event stream and the artifact store: 1 on one server, 3 on a
    # three-node cluster (a node lost loses nothing). Applied when they are created,
    # and an existing stream or bucket with another count is scaled to it.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    # Seconds between tries to reach NATS again after losing it (tries never stop).
    nats_reconnect_wait_s: float = Field(default=2.0, gt=0, le=60)
    # The local server needs retryWrites off (write throughput) and idle
    # connections recycled before its 300 s idle cut-off.
    mongo_url: str = f"mongodb://127.0.0.1:27017/?{LOCAL_MONGO_OPTIONS}"
    mongo_db: str = "trainyard"
    subject_prefix: str = Field(default="", pattern=r"^[a-z0-9_]*$")
    log_level: str = "INFO"
    # Where /metrics is served for Prometheus; port 0 disables it.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0

    @property
    def nats_servers(self) -> list[str]:
        return nats_servers(self.nats_url)


def nats_servers(url: str) -> list[str]:
    """The servers in TRAINYARD_NATS_URL: one URL or several, comma-separated."""
    return [server.strip() for server in url.split(",") if server.strip()]


def stream_replicas() -> int:
    """TRAINYARD_NATS_REPLICAS. Read where the stream and bucket are declared rather than passed
    down: every subscriber of every service declares the stream, and all of a deployment's
    processes share the setting."""
    return CommonSettings().nats_replicas


class SchedulerSettings(CommonSettings):
    # A trainer whose last heartbeat is older than this is offline.
    trainer_timeout_s: float = 10.0
    # How often pending runs are re-examined even without new events.
    placement_interval_s: float = 2.0
    # An assignment the trainer has not accepted within this goes elsewhere.
    assignment_ack_timeout_s: float = 15.0
    # Waiting this long counts as one level of priority (no run starves).
    aging_s: float = 300.0
    # Runs of one project holding or waiting on a trainer at once; 0 is no limit.
    project_max_active_runs: int = 0


class MetricsSettings(CommonSettings):
    pass


class ApiSettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    # Shown as a trainer's health: silent after this long without a heartbeat.
    trainer_timeout_s: float = 10.0
    # Larger request bodies are refused with 413 before they are read.
    max_request_bytes: int = 1_048_576
    # How often a live event stream looks for new status changes and epochs.
    sse_poll_interval_s: float = 0.5
    # A comment line this often keeps proxies from closing a quiet stream.
    sse_keepalive_s: float = 15.0
    # A live stream checks its key again this often: a revoked key's stream ends within this.
    sse_key_recheck_s: float = 2.0
    # How often a list's live stream (trainers, models, sweeps, datasets) reads the list again:
    # each read is the matching GET's queries, so slower than a run's stream.
    sse_list_poll_interval_s: float = 1.0
    # Directories (separated by the OS path separator, ':') under which datasets may be
    # registered by server path; empty: none (the local stack sets its own data directory).
    dataset_roots: str = ""
    # Dataset limits, each refused with a 422 naming the file and the limit.
    max_annotation_bytes: int = 256 * 1024 * 1024
    max_json_depth: int = 32
    max_images: int = 200_000
    max_image_pixels: int = 40_000_000
    # An uploaded dataset archive (POST /v1/datasets with a tar, tar.gz or zip body): its size
    # as sent (413 beyond), and its members' size unpacked (422 beyond: a zip or gzip bomb).
    max_upload_bytes: int = 4 * 1024 * 1024 * 1024
    max_unpacked_bytes: int = 8 * 1024 * 1024 * 1024
    # Where an upload is spooled and unpacked while it is validated; empty: the system's temp dir.
    upload_dir: str = ""

    @property
    def dataset_root_paths(self) -> list[str]:
        return [root for root in self.dataset_roots.split(os.pathsep) if root.strip()]


class TrainerSettings(CommonSettings):
    trainer_id: str = ""
    # Empty means detect: CUDA devices when present, else the CPU.
    accelerator_name: str = ""
    accelerator_count: int = 0
    work_root: str = ".trainyard/work"
    heartbeat_interval_s: float = 2.0
    # Torch threads for the training children; 0 means every core of this machine.
    threads: int = 0
    # On SIGTERM, each run gets this long to finish and store the epoch in progress before it is
    # stopped and handed back (so a rolling restart loses no trained epoch); 300 s fits an epoch
    # on a GPU, as Dataloop's default does. 0: hand back at once, from the last stored epoch.
    drain_timeout_s: float = Field(default=300.0, ge=0)
