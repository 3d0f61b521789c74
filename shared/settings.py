"""Configuration from the environment (TRAINYARD_*), one Settings class per service."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_MONGO_OPTIONS = "retryWrites=false&maxIdleTimeMS=240000"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    # One URL, or several comma-separated (the nodes of a NATS cluster: the
    # client fails over between them).
    nats_url: str = "nats://127.0.0.1:4222"
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
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]


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


class TrainerSettings(CommonSettings):
    trainer_id: str = ""
    # Empty means detect: CUDA devices when present, else the CPU.
    accelerator_name: str = ""
    accelerator_count: int = 0
    work_root: str = ".trainyard/work"
    heartbeat_interval_s: float = 2.0
    # Torch threads for the training children; 0 means every core of this machine.
    threads: int = 0
    # On SIGTERM, runs get this long to finish before they are handed back.
    drain_timeout_s: float = 0.0
