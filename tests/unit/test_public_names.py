"""The public names of each package, pinned: a change to the API is a visible decision.

When this fails, you changed what users import. If that was the intent, update the
list here (and the reference docs) in the same commit.
"""

from __future__ import annotations

import inspect

import durable
import statewf
import visualize

STATEWF = [
    "ActionFailed",
    "Cancel",
    "ConcurrencyConflict",
    "DuplicateInstance",
    "Effect",
    "EffectCall",
    "EffectFailed",
    "Engine",
    "EventDiscarded",
    "EventRejected",
    "GuardRejected",
    "History",
    "In",
    "Instance",
    "InstanceFinished",
    "InstanceNotFound",
    "InvalidInput",
    "InvalidPayload",
    "Machine",
    "MachineNotRegistered",
    "MachineVersionConflict",
    "MacrostepLimit",
    "MigrationRejected",
    "Page",
    "Raise",
    "Registry",
    "Send",
    "SpecError",
    "SpecWarning",
    "State",
    "StatewfError",
    "StoreError",
    "Transition",
    "TransitionRecord",
    "UnknownEvent",
    "__version__",
    "effect",
    "load_machine",
    "transition",
]

DURABLE = [
    "Approval",
    "ApprovalRejected",
    "Client",
    "Connection",
    "Context",
    "DuplicateStepKey",
    "Duration",
    "EngineClosed",
    "HumanTask",
    "InvalidInput",
    "NonDeterminismError",
    "NonRetryableError",
    "Pipeline",
    "PollResult",
    "Progress",
    "Queue",
    "ResultNotSerializable",
    "RetryPolicy",
    "RunError",
    "RunFinished",
    "RunNotFound",
    "RunStatus",
    "StepAttempt",
    "StepCall",
    "StepFailed",
    "StepInfo",
    "StepPlan",
    "StepTimeline",
    "StepTimeout",
    "Steps",
    "Worker",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowEngine",
    "WorkflowFailed",
    "WorkflowNotRegistered",
    "WorkflowRef",
    "WorkflowRun",
    "WorkflowTimeout",
    "credentials",
    "current_step",
    "ref",
    "testing",
    "workflow",
]

VISUALIZE = [
    "Action",
    "Cluster",
    "Diagram",
    "Edge",
    "Graph",
    "Node",
    "VisualizeError",
    "history_diagram",
    "instance_diagram",
    "machine_diagram",
    "run_diagram",
]

#: A client's operations on runs; it executes nothing.
CLIENT = [
    "approve",
    "cancel_workflow",
    "check_progress",
    "close",
    "complete_task",
    "dead_letters",
    "discard_run",
    "export_history",
    "fast_forward_workflow",
    "fork_run",
    "get_run",
    "get_runs",
    "get_task",
    "get_timeline",
    "on_old_branch",
    "pause_workflow",
    "reject",
    "result",
    "resume_workflow",
    "retry_run",
    "start_workflow",
    "tasks",
    "trigger_event",
    "unserved_runs",
    "wait_for_run",
]

#: The engine: the client's operations, plus executing here.
ENGINE = sorted(
    [*CLIENT, "recover_runs", "register", "resume", "start", "wake_due", "workflows", "worker_id"]
)

WORKER = ["close", "request_stop", "run", "shutdown"]


def _public(cls: type) -> list[str]:
    return sorted(name for name, _ in inspect.getmembers(cls) if not name.startswith("_"))


def test_each_package_exports_exactly_its_pinned_names() -> None:
    assert statewf.__all__ == STATEWF
    assert durable.__all__ == DURABLE
    assert visualize.__all__ == VISUALIZE
    for package in (statewf, durable, visualize):
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert missing == [], package.__name__


def test_each_face_has_only_its_users_operations() -> None:
    assert _public(durable.Client) == CLIENT
    assert _public(durable.WorkflowEngine) == ENGINE
    assert _public(durable.Worker) == WORKER
    # the internals of leases and scheduling are not on any face
    for face in (durable.Client, durable.WorkflowEngine, durable.Worker):
        for internal in ("beat", "capacity", "lease_until"):
            assert not hasattr(face, internal), (face.__name__, internal)
    assert not hasattr(durable.Client, "wake_due")


def test_the_engine_offers_every_client_operation_with_the_same_parameters() -> None:
    engine_only = {"start_workflow"}  # the engine executes here: its own routing defaults
    for name in CLIENT:
        if name in engine_only:
            continue
        client = inspect.signature(getattr(durable.Client, name))
        engine = inspect.signature(getattr(durable.WorkflowEngine, name))
        assert list(client.parameters) == list(engine.parameters), name
