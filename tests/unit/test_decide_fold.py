"""The pure core: deciding transitions and folding logs, with no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sample_machines import Order, Payment, counter_machine, order_machine

from statewf import (
    ActionFailed,
    GuardRejected,
    InstanceFinished,
    InvalidInput,
    InvalidPayload,
    Machine,
    State,
    StatewfError,
    UnknownEvent,
    effect,
    transition,
)
from statewf.adapter import CompiledMachine
from statewf.decide import Decision, allowed_events, decide, start
from statewf.fold import apply, context_diff, fold
from statewf.records import Instance

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def begin(machine: Machine, context: Any = None, **kw: Any) -> Decision:
    return start(CompiledMachine(machine), instance_id="i1", context=context, now=T0, **kw)


def run(machine: Machine, context: Any, *events: tuple[str, Any]) -> list[Decision]:
    """Create then apply each (event, payload); every decision, in order."""
    compiled = CompiledMachine(machine)
    decisions = [start(compiled, instance_id="i1", context=context, now=T0)]
    for n, (event, payload) in enumerate(events, start=1):
        decisions.append(decide(compiled, decisions[-1].snapshot, event, payload, at(n)))
    return decisions


ORDER = {"order_id": "A1", "total": 100}


# ------------------------------------------------------------------ start


def test_start_makes_the_create_record_and_snapshot() -> None:
    d = begin(order_machine(), ORDER, resource_id="tenant", idempotency_key="k")
    assert d.record.seq == 1
    assert d.record.kind == "create"
    assert d.record.target == ("pending",)
    assert d.snapshot.state == "pending"
    assert d.snapshot.version == 1
    assert d.snapshot.status == "active"
    assert d.snapshot.context == {"order_id": "A1", "total": 100.0, "paid_at": None, "notes": []}
    assert d.snapshot.resource_id == "tenant"
    assert d.snapshot.idempotency_key == "k"
    assert d.snapshot.created_at == T0
    assert d.effects == ()


def test_start_validates_the_context() -> None:
    with pytest.raises(InvalidInput, match=r"context is not a valid Order .*total") as exc:
        begin(order_machine(), {"order_id": "A1"})
    assert exc.value.instance_id == "i1"


@pytest.mark.parametrize("context", [[1, 2], "abc", 5, ("a", "b")])
def test_start_rejects_contexts_that_are_not_objects(context: Any) -> None:
    with pytest.raises(InvalidInput, match="context must be a JSON object"):
        begin(order_machine(), context)
    with pytest.raises(InvalidInput, match="context must be a JSON object"):
        begin(counter_machine(), context)


def test_start_accepts_a_context_model() -> None:
    d = begin(order_machine(), Order(order_id="B", total=5))
    assert d.snapshot.context["order_id"] == "B"


def test_start_runs_the_initial_entry_actions_and_records_its_effects() -> None:
    sent: list[Any] = []
    m = Machine(
        "m",
        initial="a",
        states={
            "a": State(
                on_enter=[lambda ctx, ev: {"entered": True}, effect(sent.append, name="hello")]
            )
        },
    )
    d = begin(m, {})
    assert d.snapshot.context == {"entered": True}
    assert d.effects == ("hello",)
    assert sent == []  # effects are recorded, never run by the pure core


def test_a_machine_whose_initial_state_is_final_starts_final() -> None:
    d = begin(Machine("m", initial="done", states={"done": State(final=True)}), {})
    assert d.snapshot.status == "final"


# ------------------------------------------------------------------ decide


def test_an_accepted_event_moves_and_runs_the_action() -> None:
    create, paid = run(order_machine(), ORDER, ("PAYMENT_RECEIVED", {"amount": 100}))
    assert paid.record.seq == 2
    assert paid.record.event == "PAYMENT_RECEIVED"
    assert paid.record.source == ("pending",)
    assert paid.record.target == ("processing",)
    assert paid.record.payload == {"amount": 100.0}
    assert paid.record.context_set == {"paid_at": "paid"}
    assert paid.record.created_at == at(1)
    assert paid.snapshot.state == "processing"
    assert paid.snapshot.version == 2
    assert paid.effects == ("notify_warehouse",)
    assert create.snapshot.state == "pending"  # the input snapshot is untouched


def test_a_payload_model_instance_is_accepted() -> None:
    _, paid = run(order_machine(), ORDER, ("PAYMENT_RECEIVED", Payment(amount=150)))
    assert paid.record.payload == {"amount": 150.0}


def test_guard_false_is_guard_rejected_with_attributes() -> None:
    (create,) = run(order_machine(), ORDER)
    with pytest.raises(GuardRejected, match="covers_total") as exc:
        decide(
            CompiledMachine(order_machine()), create.snapshot, "PAYMENT_RECEIVED", {"amount": 1}, T0
        )
    assert exc.value.instance_id == "i1"
    assert exc.value.event == "PAYMENT_RECEIVED"
    assert exc.value.state == "pending"
    assert exc.value.details["guards"] == ["covers_total"]


def test_unknown_event_lists_the_allowed_ones() -> None:
    (create,) = run(order_machine(), ORDER)
    with pytest.raises(UnknownEvent, match="allowed here: PAYMENT_RECEIVED, CANCEL") as exc:
        decide(CompiledMachine(order_machine()), create.snapshot, "SHIPPED", None, T0)
    assert exc.value.details["allowed"] == ["PAYMENT_RECEIVED", "CANCEL"]
    assert exc.value.state == "pending"


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"amount": "lots"}, {"amount": [1]}, "100", [100]],
)
def test_invalid_payloads_are_invalid_payload(payload: Any) -> None:
    (create,) = run(order_machine(), ORDER)
    with pytest.raises(InvalidPayload, match="not a valid Payment") as exc:
        decide(CompiledMachine(order_machine()), create.snapshot, "PAYMENT_RECEIVED", payload, T0)
    assert exc.value.event == "PAYMENT_RECEIVED"


def test_oversized_and_non_json_payloads_are_invalid_payload() -> None:
    compiled = CompiledMachine(counter_machine())
    snap = start(compiled, instance_id="i1", context={"n": 0, "moves": 0}, now=T0).snapshot
    with pytest.raises(InvalidPayload, match="over the 100-byte limit") as exc:
        decide(compiled, snap, "INC", {"x": "y" * 200}, T0, max_bytes=100)
    assert exc.value.instance_id == "i1"
    for bad in [object(), {"a": {1, object()}}, float("nan"), {"x": float("inf")}, "a\x00b"]:
        with pytest.raises(InvalidPayload):
            decide(compiled, snap, "INC", bad, T0)
    # the same limit applies to payloads validated by a schema
    (create,) = run(order_machine(), ORDER)
    with pytest.raises(InvalidPayload, match="over the 10-byte limit") as exc:
        decide(
            CompiledMachine(order_machine()),
            create.snapshot,
            "PAYMENT_RECEIVED",
            {"amount": 100},
            T0,
            max_bytes=10,
        )
    assert exc.value.event == "PAYMENT_RECEIVED"


def test_final_state_rejects_every_event() -> None:
    *_, cancelled = run(order_machine(), ORDER, ("CANCEL", None))
    assert cancelled.snapshot.status == "final"
    assert allowed_events(CompiledMachine(order_machine()), cancelled.snapshot) == []
    for event in ("CANCEL", "PAYMENT_RECEIVED", "NOPE"):
        with pytest.raises(InstanceFinished, match="is final") as exc:
            decide(CompiledMachine(order_machine()), cancelled.snapshot, event, None, T0)
        assert exc.value.state == "cancelled"


def guard_true(ctx: Any, ev: Any) -> bool:
    return True


def is_vip(ctx: dict[str, Any], ev: Any) -> bool:
    return bool(ctx.get("vip"))


def big(ctx: Any, ev: dict[str, Any]) -> bool:
    return int(ev["n"]) > 10


def machine_with_alternatives() -> Machine:
    return Machine(
        "alt",
        initial="a",
        states={
            "a": State(
                on={
                    "GO": [
                        transition("big", guard=[guard_true, big]),
                        transition("vip", unless=lambda c, e: not is_vip(c, e)),
                        transition("plain", unless=is_vip),
                    ]
                }
            ),
            "big": State(),
            "vip": State(),
            "plain": State(),
        },
    )


@pytest.mark.parametrize(
    ("context", "n", "expected"),
    [
        ({}, 50, "big"),
        ({"vip": True}, 50, "big"),  # the first alternative whose guards all pass wins
        ({"vip": True}, 1, "vip"),
        ({}, 1, "plain"),
    ],
)
def test_guarded_alternatives_and_unless(context: dict[str, Any], n: int, expected: str) -> None:
    _, moved = run(machine_with_alternatives(), context, ("GO", {"n": n}))
    assert moved.snapshot.state == expected


def test_all_alternatives_rejected_names_every_guard() -> None:
    m = Machine(
        "m",
        initial="a",
        states={
            "a": State(on={"GO": [transition("b", guard=big), transition("b", unless=guard_true)]}),
            "b": State(),
        },
    )
    (create,) = run(m, {})
    with pytest.raises(GuardRejected) as exc:
        decide(CompiledMachine(m), create.snapshot, "GO", {"n": 1}, T0)
    assert exc.value.details["guards"] == ["big", "guard_true"]


class Counter(BaseModel):
    n: int = 0
    label: str = ""


def test_actions_mutate_return_dicts_or_return_models() -> None:
    def mutate(ctx: Counter, ev: Any) -> None:
        ctx.n += 1

    def as_dict(ctx: Counter, ev: Any) -> dict[str, Any]:
        return {"label": f"n={ctx.n}"}

    def as_model(ctx: Counter, ev: Any) -> Counter:
        return Counter(n=ctx.n * 10, label=ctx.label + "!")

    m = Machine(
        "m",
        initial="a",
        context=Counter,
        states={"a": State(on={"GO": transition(action=[mutate, as_dict, as_model])})},
    )
    _, d = run(m, {}, ("GO", None))
    assert d.snapshot.context == {"n": 10, "label": "n=1!"}
    assert d.record.context_set == {"n": 10, "label": "n=1!"}


def test_an_action_returning_something_else_is_action_failed() -> None:
    m = Machine(
        "m", initial="a", states={"a": State(on={"GO": transition(action=lambda c, e: 42)})}
    )
    (create,) = run(m, {})
    with pytest.raises(ActionFailed, match="returned int"):
        decide(CompiledMachine(m), create.snapshot, "GO", None, T0)


def test_an_action_leaving_an_invalid_context_is_action_failed() -> None:
    def break_it(ctx: Order, ev: Any) -> dict[str, Any]:
        return {"total": "not a number"}

    m = Machine(
        "m", context=Order, initial="a", states={"a": State(on={"GO": transition(action=break_it)})}
    )
    (create,) = run(m, ORDER)
    with pytest.raises(ActionFailed, match="unstorable context"):
        decide(CompiledMachine(m), create.snapshot, "GO", None, T0)


def boom(ctx: Any, ev: Any) -> None:
    raise RuntimeError("kaput")


@pytest.mark.parametrize("where", ["guard", "unless", "action", "on_exit", "on_enter"])
def test_hook_exceptions_are_action_failed_and_keep_the_cause(where: str) -> None:
    if where in ("guard", "unless", "action"):
        t = transition("b", **{where: boom})
        states = {"a": State(on={"GO": t}), "b": State()}
    elif where == "on_exit":
        states = {"a": State(on={"GO": "b"}, on_exit=boom), "b": State()}
    else:
        states = {"a": State(on={"GO": "b"}), "b": State(on_enter=boom)}
    m = Machine("m", initial="a", states=states)
    (create,) = run(m, {})
    with pytest.raises(ActionFailed, match="'boom' raised RuntimeError: kaput") as exc:
        decide(CompiledMachine(m), create.snapshot, "GO", None, T0)
    assert isinstance(exc.value.__cause__, RuntimeError)
    assert exc.value.details["hook"] == "boom"
    assert exc.value.instance_id == "i1"
    assert exc.value.event == "GO"
    assert create.snapshot.state == "a"


def tracing_machine() -> Machine:
    def tr(tag: str) -> Any:
        def hook(ctx: dict[str, Any], ev: Any) -> None:
            ctx["trace"] = [*ctx["trace"], tag]

        hook.__qualname__ = f"trace_{tag}"
        return hook

    return Machine(
        "trace",
        initial="a",
        states={
            "a": State(
                on_enter=tr("enter_a"),
                on_exit=tr("exit_a"),
                on={
                    "SELF": transition("a", action=tr("act_self")),
                    "INTERNAL": transition(internal=True, action=tr("act_internal")),
                    "NOOP": transition(internal=True),
                    "GO": transition("b", action=tr("act_go")),
                },
            ),
            "b": State(on_enter=tr("enter_b")),
        },
    )


def test_self_internal_and_external_transitions_run_the_right_hooks() -> None:
    create, self_t, internal, noop, go = run(
        tracing_machine(),
        {"trace": []},
        ("SELF", None),
        ("INTERNAL", None),
        ("NOOP", None),
        ("GO", None),
    )
    assert create.snapshot.context["trace"] == ["enter_a"]
    assert self_t.snapshot.context["trace"][1:] == ["act_self", "exit_a", "enter_a"]
    assert self_t.record.meta == {}
    assert self_t.record.target == ("a",)
    assert internal.snapshot.context["trace"][4:] == ["act_internal"]
    assert internal.record.meta == {"internal": True}
    assert internal.record.target == ("a",)
    assert noop.record.context_set == {}  # nothing ran: no context change recorded
    assert noop.snapshot.context == internal.snapshot.context
    assert go.snapshot.context["trace"][5:] == ["act_go", "exit_a", "enter_b"]
    assert go.snapshot.state == "b"


def test_decide_never_mutates_the_snapshot_it_was_given() -> None:
    compiled = CompiledMachine(tracing_machine())
    create = start(compiled, instance_id="i1", context={"trace": []}, now=T0)
    before = create.snapshot.model_dump_json()
    decide(compiled, create.snapshot, "GO", None, T0)
    with pytest.raises(ActionFailed):
        decide(
            CompiledMachine(
                Machine(
                    "trace", initial="a", states={"a": State(on={"X": transition(action=boom)})}
                )
            ),
            create.snapshot,
            "X",
            None,
            T0,
        )
    assert create.snapshot.model_dump_json() == before


def test_effects_are_recorded_in_order_and_not_run() -> None:
    calls: list[Any] = []
    e1 = effect(calls.append, name="first")
    e2 = effect(calls.append, name="second")
    m = Machine(
        "m",
        initial="a",
        states={
            "a": State(on_exit=e1, on={"GO": transition("b", action=e2)}),
            "b": State(on_enter=[e1, e2]),
        },
    )
    _, go = run(m, {}, ("GO", None))
    assert go.effects == ("second", "first", "first", "second")
    assert calls == []
    assert go.record.context_set == {}


# ------------------------------------------------------------------ context diffs


def test_context_diff_keeps_true_and_1_apart() -> None:
    assert context_diff({"a": 1}, {"a": True}) == ({"a": True}, ())
    assert context_diff({"a": True}, {"a": 1}) == ({"a": 1}, ())
    assert context_diff({"a": 1}, {"a": 1.0}) == ({"a": 1.0}, ())
    assert context_diff({"a": [1]}, {"a": [True]}) == ({"a": [True]}, ())
    assert context_diff({"a": {"x": 0}}, {"a": {"x": False}}) == ({"a": {"x": False}}, ())
    assert context_diff({"a": 1, "b": 2}, {"a": 1, "c": 3}) == ({"c": 3}, ("b",))
    assert context_diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == ({}, ())


def test_an_action_turning_1_into_true_is_recorded_and_folds_back() -> None:
    def to_true(ctx: dict[str, Any], ev: Any) -> dict[str, Any]:
        return {"flag": True}

    def drop(ctx: dict[str, Any], ev: Any) -> None:
        del ctx["gone"]

    m = Machine(
        "m", initial="a", states={"a": State(on={"GO": transition(action=[to_true, drop])})}
    )
    decisions = run(m, {"flag": 1, "gone": "x"}, ("GO", None))
    last = decisions[-1]
    assert last.record.context_set == {"flag": True}
    assert last.record.context_unset == ("gone",)
    assert last.snapshot.context == {"flag": True}
    assert fold(d.record for d in decisions).context["flag"] is True


# ------------------------------------------------------------------ fold


def order_decisions() -> list[Decision]:
    return run(
        order_machine(),
        ORDER,
        ("PAYMENT_RECEIVED", {"amount": 120}),
        ("OUT_OF_STOCK", None),
        ("RESTOCKED", None),
        ("SHIPPED", None),
        ("DELIVERED", None),
        ("CONFIRMED", None),
    )


def test_fold_of_the_log_equals_every_intermediate_snapshot() -> None:
    decisions = order_decisions()
    records = [d.record for d in decisions]
    for n in range(1, len(records) + 1):
        assert fold(records[:n]) == decisions[n - 1].snapshot
    final = decisions[-1].snapshot
    assert final.state == "completed"
    assert final.status == "final"
    assert final.version == len(records)
    assert final.updated_at == at(6)
    assert final.created_at == T0


def test_fold_rejects_broken_logs() -> None:
    records = [d.record for d in order_decisions()]
    with pytest.raises(StatewfError, match="cannot fold an empty log"):
        fold([])
    with pytest.raises(StatewfError, match="does not start with a create record"):
        fold(records[1:])
    with pytest.raises(StatewfError, match="jumps from 2 to 4"):
        fold([records[0], records[1], records[3]])
    with pytest.raises(StatewfError, match="jumps"):
        apply(fold(records[:2]), records[1])


def test_snapshot_is_frozen() -> None:
    snap: Instance = order_decisions()[-1].snapshot
    with pytest.raises(ValueError, match="frozen"):
        snap.state = "x"  # type: ignore[misc]


def test_hook_free_and_guarded_candidates_are_taken_in_declaration_order() -> None:
    def never(ctx: Any, ev: Any) -> bool:
        return False

    machine = Machine(
        "candidates",
        initial="a",
        states={
            "a": State(
                on={
                    "GO": [transition("guarded", guard=never), transition("plain")],
                    "FIRST": [transition("plain"), transition("guarded", unless=never)],
                    "STAY": "a",
                }
            ),
            "guarded": State(),
            "plain": State(on={"BACK": "a"}),
        },
    )
    went = run(machine, None, ("GO", None), ("BACK", None), ("FIRST", None))
    assert [d.record.target for d in went[1:]] == [("plain",), ("a",), ("plain",)]
    assert [d.snapshot.state for d in went[1:]] == ["plain", "a", "plain"]
    stayed = run(machine, None, ("STAY", None))[-1]
    assert stayed.record.source == ("a",)
    assert stayed.record.target == ("a",)
    assert stayed.record.meta == {}
    assert stayed.snapshot.version == 2
