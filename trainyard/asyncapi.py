"""The AsyncAPI 3 document of trainyard's events, generated from the code that defines them:
the pydantic event models (shared/events.py) and the subject names (shared/subjects.py).

    python scripts/generate_asyncapi.py          # rewrite docs/asyncapi.yaml
    python scripts/generate_asyncapi.py --check  # exit 1 when it is stale

This module builds the document as data and needs nothing beyond the platform's
own dependencies; writing it as YAML (PyYAML, a dev dependency) is the script's.

Generated here rather than by FastStream from the services' brokers: the handlers
decode raw messages themselves (so a malformed one can be dead-lettered), which
leaves FastStream nothing to read the payload schemas from.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared import events, sweeps
from shared.bus import DUPLICATE_WINDOW_S
from shared.subjects import Subjects

TITLE = "trainyard events"
VERSION = "1"  # the events' schema_version


@dataclass(frozen=True)
class Channel:
    id: str
    address: str
    message: type[BaseModel]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str
    durable: bool = True
    parameters: tuple[tuple[str, str], ...] = ()


def channels() -> list[Channel]:
    """Every subject, who publishes it and who consumes it; addresses come from Subjects itself."""
    s = Subjects()
    trainer = (("trainer_id", "the trainer's id"),)
    # A trainer publishes only under its own id (its NATS credentials allow nothing else), and
    # consumers accept a report only from the trainer holding the run's current attempt.
    reporter = (("trainer_id", "the publishing trainer's id: its NATS user may publish only under it"),)
    return [
        Channel("runCreated", s.run_created, events.RunCreated, ("api",), ("scheduler",),
                "A user created a run; the scheduler queues it."),
        Channel("runAssigned", s.run_assigned("{trainer_id}"), events.RunAssigned, ("scheduler",), ("trainer",),
                "An attempt of a run goes to one trainer, with the dataset's layout.", parameters=trainer),
        Channel("runAccepted", s.run_accepted("{trainer_id}"), events.RunAccepted, ("trainer",), ("scheduler",),
                "The trainer took the assignment; the scheduler stops waiting to retry it elsewhere.",
                parameters=reporter),
        Channel("runStarted", s.run_started("{trainer_id}"), events.RunStarted, ("trainer",), ("scheduler",),
                "Training of an attempt began on a device.", parameters=reporter),
        Channel("epochLogged", s.epoch_logged("{trainer_id}"), events.EpochLogged, ("trainer",), ("metrics",),
                "An epoch finished: mean losses, learning rate, COCO metrics, and the confusion matrix "
                "when it was evaluated.", parameters=reporter),
        Channel("runCompleted", s.run_completed("{trainer_id}"), events.RunCompleted, ("trainer",), ("scheduler",),
                "The one terminal event of an attempt; it carries the final status.", parameters=reporter),
        Channel("iterationLogged", s.iterations_logged("{trainer_id}"), events.IterationsLogged,
                ("trainer",), ("metrics",),
                "Training losses every log_interval steps, in batches: `{step, loss, losses, learning_rate}`.",
                parameters=reporter),
        Channel("checkpointSaved", s.checkpoint_saved("{trainer_id}"), events.CheckpointSaved,
                ("trainer",), ("scheduler",),
                "A reported epoch's checkpoint is in the artifact store (NATS object store TRAINYARD_ARTIFACTS); "
                "the scheduler records the current attempt's newest, which the next attempt resumes from.",
                parameters=reporter),
        Channel("modelRegistered", s.model_registered("{trainer_id}"), events.ModelRegistered,
                ("trainer",), ("metrics",),
                "A successful run produced a trained model: its weights, classes and lineage.", parameters=reporter),
        Channel("runStatusChanged", s.run_status_changed, events.RunStatusChanged, ("scheduler",), (),
                "Every status transition of a run, terminal ones too: what integrations follow."),
        Channel("runKillRequested", s.run_kill_requested, events.RunKillRequested, ("api",), ("scheduler",),
                "A user asked to stop a run."),
        Channel("runRerunRequested", s.run_rerun_requested, events.RunRerunRequested, ("api",), ("scheduler",),
                "A user asked to run again a run that did not succeed."),
        Channel("runRemoved", s.run_removed, events.RunRemoved, ("api",), ("metrics",),
                "A user removed a finished run; the api deleted its document and stored artifacts, the metrics "
                "service deletes its logs and confusion matrices. A registered model of the run stays."),
        Channel("runStopRequested", s.run_stop_requested("{trainer_id}"), events.RunStopRequested, ("scheduler",),
                ("trainer",), "The scheduler asks a trainer to stop an attempt, and says how it ends.",
                parameters=trainer),
        Channel("runRungDecided", s.run_rung_decided("{trainer_id}"), sweeps.RunRungDecided, ("scheduler",),
                ("trainer",), "ASHA's decision for a sweep trial that reported a rung's epoch: the training child "
                "waits for it there, then continues or ends the run successfully.", parameters=trainer),
        Channel("sweepCreated", s.sweep_created, sweeps.SweepCreated, ("api",), (),
                "A user started a hyperparameter sweep; its trials are runs, each announced by run.created."),
        Channel("sweepKillRequested", s.sweep_kill_requested, sweeps.SweepKillRequested, ("api",), ("scheduler",),
                "A user killed a sweep: the scheduler kills every trial that has not ended."),
        Channel("sweepTrialStopped", s.sweep_trial_stopped, sweeps.SweepTrialStopped, ("scheduler",), (),
                "ASHA stopped a trial at a rung (it ends successfully there, epochs, checkpoints and model kept), "
                "with the rung, the metric's value and why."),
        Channel("sweepCompleted", s.sweep_completed, sweeps.SweepCompleted, ("scheduler",), (),
                "Every trial of a sweep ended (or it was killed): its status and best trial."),
        Channel("runReleased", s.run_released("{trainer_id}"), events.RunReleased, ("trainer",), ("scheduler",),
                "A draining trainer stopped an attempt after its last checkpoint and hands the run back.",
                parameters=reporter),
        Channel("trainerHeartbeat", s.trainer_heartbeat("{trainer_id}"), events.TrainerHeartbeat,
                ("trainer",), ("scheduler",),
                "A trainer's accelerators, free capacity and running attempts, every few seconds. "
                "Core NATS, not stored: a lost heartbeat is replaced by the next.", durable=False, parameters=reporter),
        Channel("deadLetter", s.dead_letter("{subject}"), events.DeadLetter, ("any consumer",), (),
                "A message a consumer set aside, undecodable or refused (a report from a trainer not holding the "
                "run), with the reason, the error and the payload; kept for people.",
                parameters=(("subject", "the subject the message was published on"),)),
    ]


def _operation_description(channel: Channel) -> str:
    consumers = ", ".join(channel.consumers) or "integrations"
    delivery = (f"JetStream (stream TRAINYARD): stored, delivered at least once; a repeat of a message's "
                f"Nats-Msg-Id within {DUPLICATE_WINDOW_S:.0f} s is dropped" if channel.durable
                else "core NATS: not stored, at most once")
    return f"Published by {', '.join(channel.producers)}; consumed by {consumers}. {delivery}."


def document() -> dict[str, Any]:
    catalogue = channels()
    models = sorted({c.message for c in catalogue}, key=lambda m: m.__name__)
    _, schema = models_json_schema([(m, "serialization") for m in models],
                                   ref_template="#/components/schemas/{model}")
    schemas = dict(sorted(schema.get("$defs", {}).items()))
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": (
                "Events between trainyard's services, and for integrations to subscribe to. Every event is JSON "
                "with `schema_version`, `event_id` and `occurred_at` (run events also `run_id`); consumers "
                "ignore fields they do not know. Deployments may prefix every subject (`<prefix>.run.created`). "
                "Generated from shared/events.py and shared/subjects.py by `scripts/generate_asyncapi.py`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:4222", "protocol": "nats",
                      "description": "`trainyard up` (the port is chosen at start; see .trainyard/stack.json)"},
        },
        "channels": {},
        "operations": {},
        "components": {"messages": {}, "schemas": schemas},
    }
    for channel in catalogue:
        name = channel.message.__name__
        entry: dict[str, Any] = {
            "address": channel.address,
            "description": channel.description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        if channel.parameters:
            entry["parameters"] = {param: {"description": text} for param, text in channel.parameters}
        doc["channels"][channel.id] = entry
        doc["operations"][f"send{channel.id[0].upper()}{channel.id[1:]}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel.id}"},
            "summary": channel.description.split(":")[0].split(";")[0].rstrip("."),
            "description": _operation_description(channel),
            "messages": [{"$ref": f"#/channels/{channel.id}/messages/{name}"}],
        }
        doc["components"]["messages"][name] = {
            "name": name,
            "title": name,
            "summary": (channel.message.__doc__ or channel.description).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
    return doc
