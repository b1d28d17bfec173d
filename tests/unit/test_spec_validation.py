"""Machine definitions are validated when built: every malformed spec is a SpecError."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from sample_machines import Order, Payment, counter_machine, order_machine

import statewf
from statewf import Machine, Registry, SpecError, State, transition


def build(states: dict[str, Any], initial: str = "a", **kw: Any) -> Machine:
    return Machine("m", initial=initial, states=states, **kw)


def problems_of(exc: pytest.ExceptionInfo[SpecError]) -> list[str]:
    problems = exc.value.details["problems"]
    assert isinstance(problems, list)
    return problems


def test_the_order_machine_is_valid_and_knows_its_events() -> None:
    m = order_machine()
    assert m.initial == "pending"
    assert set(m.states) == {
        "pending",
        "processing",
        "backorder",
        "shipped",
        "delivered",
        "returning",
        "completed",
        "cancelled",
    }
    assert m.events_from("pending") == ["PAYMENT_RECEIVED", "CANCEL"]
    assert "SHIPPED" in m.events
    assert set(m.effect_hooks()) == {"notify_warehouse", "send_shipping_notification"}


def test_unknown_target_state_is_named() -> None:
    with pytest.raises(SpecError, match="targets unknown state 'nowhere'") as exc:
        build({"a": State(on={"GO": "nowhere"})})
    assert exc.value.details["machine"] == "m"
    assert any("'GO'" in p for p in problems_of(exc))


def test_missing_initial_state_is_named() -> None:
    with pytest.raises(SpecError, match="initial state 'start' is not declared"):
        build({"a": State()}, initial="start")


def test_no_states_is_an_error() -> None:
    with pytest.raises(SpecError, match="at least one state"):
        build({})


def test_unreachable_states_are_each_named() -> None:
    with pytest.raises(SpecError) as exc:
        build(
            {
                "a": State(on={"GO": "b"}),
                "b": State(final=True),
                "island": State(on={"X": "island2"}),
                "island2": State(),
            }
        )
    unreachable = [p for p in problems_of(exc) if "unreachable" in p]
    assert len(unreachable) == 2
    assert "'island'" in unreachable[0]
    assert "'island2'" in unreachable[1]


def test_a_state_reached_only_through_an_internal_transition_is_unreachable() -> None:
    with pytest.raises(SpecError, match="'b' is unreachable"):
        build({"a": State(on={"TICK": transition(internal=True)}), "b": State()})


def test_unresolvable_guard_name_without_registry_says_pass_registry() -> None:
    with pytest.raises(SpecError, match="no hook named 'is_ok'; pass registry="):
        build({"a": State(on={"GO": transition("a", guard="is_ok")})})


def test_unresolvable_hook_names_with_registry_say_register_it() -> None:
    reg = Registry()
    reg.add("known", lambda ctx, ev: True)
    with pytest.raises(SpecError) as exc:
        build(
            {
                "a": State(
                    on_enter="missing_enter",
                    on={
                        "GO": transition(
                            "a", guard="known", unless="missing_unless", action=["missing_act"]
                        )
                    },
                )
            },
            registry=reg,
        )
    problems = " | ".join(problems_of(exc))
    for name in ("missing_enter", "missing_unless", "missing_act"):
        assert f"no hook named {name!r}; register it" in problems
    assert "'known'" not in problems


def test_final_state_with_transitions_is_an_error() -> None:
    with pytest.raises(SpecError, match="final state 'done' cannot have outgoing transitions"):
        build({"a": State(on={"GO": "done"}), "done": State(final=True, on={"BACK": "a"})})


def test_payload_schema_must_be_a_pydantic_model() -> None:
    with pytest.raises(SpecError, match="payload must be a BaseModel"):
        build({"a": State(on={"GO": transition("a", payload=dict)})})  # type: ignore[arg-type]


def test_context_must_be_a_pydantic_model() -> None:
    with pytest.raises(SpecError, match="context must be a pydantic BaseModel"):
        build({"a": State()}, context=dict)  # type: ignore[arg-type]


def test_alternatives_must_share_a_payload_schema() -> None:
    class Other(BaseModel):
        x: int

    with pytest.raises(SpecError, match="must share one payload schema"):
        build(
            {
                "a": State(
                    on={"GO": [transition("a", payload=Payment), transition("a", payload=Other)]}
                )
            }
        )


def test_an_event_with_an_empty_list_of_transitions_is_an_error() -> None:
    with pytest.raises(SpecError, match="event 'GO' has no transitions"):
        build({"a": State(on={"GO": []})})


def test_a_state_that_is_not_a_state_object_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"must be a statewf\.State, got dict"):
        build({"a": {"on": {}}})


def test_a_transition_that_is_not_a_transition_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"expected a target name or statewf.transition"):
        build({"a": State(on={"GO": [42]})})  # type: ignore[list-item]


def test_a_hook_that_is_neither_callable_nor_name_is_an_error() -> None:
    with pytest.raises(SpecError, match="expected a callable or a hook name, got 42"):
        build({"a": State(on_enter=[42])})  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must be a non-empty string"),
        ("   ", "must be a non-empty string"),
        ("x" * 201, "longer than 200 characters"),
        ("bad\x00name", "contains control characters"),
        ("bad\nname", "contains control characters"),
    ],
)
def test_hostile_machine_state_and_event_names(name: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Machine(name, initial="a", states={"a": State()})
    with pytest.raises(SpecError, match=message):
        Machine("m", initial=name, states={name: State()})
    with pytest.raises(SpecError, match=message):
        build({"a": State(on={name: "a"})})


def test_non_string_names_and_dotted_state_names() -> None:
    with pytest.raises(SpecError, match="must be a non-empty string, got 3"):
        build({"a": State(on={3: "a"})})  # type: ignore[dict-item]
    with pytest.raises(SpecError, match=r"may not contain '\.'"):
        Machine("m", initial="a.b", states={"a.b": State()})
    with pytest.raises(SpecError, match="machine version"):
        Machine("m", version="", initial="a", states={"a": State()})


def test_sql_and_unicode_names_are_legal_names() -> None:
    hostile = "'; DROP TABLE x; --"
    m = Machine(hostile, initial="ünï😀", states={"ünï😀": State(on={hostile: "ünï😀"})})
    assert m.events == [hostile]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as exc:
        build({"a": State(on={"GO": transition("b", guard="nope")})}, initial="zzz")
    assert len(problems_of(exc)) >= 2
    assert "is invalid:" in str(exc.value)


def test_registry_rejects_duplicates_and_non_models() -> None:
    reg = Registry()
    reg.add("g", lambda c, e: True)
    with pytest.raises(SpecError, match="already has a hook named 'g'"):
        reg.add("g", lambda c, e: False)
    reg.model(Order)
    with pytest.raises(SpecError, match="already has a model named 'Order'"):
        reg.model(Order)
    with pytest.raises(SpecError, match="takes a pydantic BaseModel"):
        reg.model(dict)  # type: ignore[arg-type]
    assert reg.names() == ["g"]
    assert reg.model_names() == ["Order"]


def test_transition_helper_shapes() -> None:
    internal = transition(action=print)
    assert internal.internal
    assert internal.target is None
    forced = transition("x", internal=True)
    assert forced.internal
    assert forced.target is None
    external = transition("x", guard=[str, repr], unless=len)
    assert not external.internal
    assert external.guards == (str, repr)
    assert external.unless == (len,)
    with pytest.raises(SpecError, match="expected a callable, a name or a list"):
        transition("x", guard=42)  # type: ignore[arg-type]


def test_fingerprint_is_stable_and_changes_with_the_definition() -> None:
    assert order_machine().fingerprint == order_machine().fingerprint
    assert order_machine().fingerprint != order_machine(version="2").fingerprint
    assert counter_machine().fingerprint != order_machine().fingerprint
    a = build({"a": State(on={"GO": "b"}), "b": State()})
    b = build({"a": State(on={"GO": "b"}), "b": State(final=True)})
    assert a.fingerprint != b.fingerprint


def test_effect_decorator_names_and_calls_the_function() -> None:
    calls: list[Any] = []

    @statewf.effect(name="custom")
    def ping(call: Any) -> None:
        calls.append(call)

    assert ping.name == "custom"
    ping("x")
    assert calls == ["x"]
    assert statewf.effect(print).name == "print"
