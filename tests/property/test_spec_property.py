"""A random machine spec (data document or Python objects) validates or raises SpecError."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from statewf import Machine, Registry, SpecError, State, effect, transition
from statewf.adapter import CompiledMachine
from statewf.loader import machine_from_mapping

NAMES = ["a", "b", "c", "done", "", " ", "x.y", "ünï", "'; --", "n\x00l", "GO", "STOP"]
HOOKS = ["ok", "no", "act", "fx", "missing"]
MODELS = ["Ctx", "Pay", "Nope"]


class Ctx(BaseModel):
    n: int = 0


class Pay(BaseModel):
    amount: float = 0


def registry() -> Registry:
    reg = Registry()
    reg.add("ok", lambda ctx, ev: True)
    reg.add("no", lambda ctx, ev: False)
    reg.add("act", lambda ctx, ev: None)
    reg.add("fx", effect(lambda call: None, name="fx"))
    reg.model(Ctx)
    reg.model(Pay)
    return reg


def junk() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.sampled_from(NAMES),
        st.just([]),
        st.just({}),
    )


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else ``bad``: specs near the valid ones."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 0 else good)


names = st.one_of(st.sampled_from(NAMES), st.text(max_size=4))
hashable_junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 3))
state_names = mostly(st.sampled_from(["a", "b", "c", "done"]), names)
event_names = mostly(st.sampled_from(["GO", "STOP", "BACK"]), names)
hook_refs = mostly(
    st.one_of(
        st.none(), st.sampled_from(HOOKS[:3]), st.lists(st.sampled_from(HOOKS[:4]), max_size=2)
    ),
    st.one_of(st.just("missing"), junk()),
)
transition_docs = mostly(
    st.one_of(
        state_names,
        st.fixed_dictionaries(
            {"target": mostly(state_names, st.none())},
            optional={
                "guard": hook_refs,
                "unless": hook_refs,
                "action": hook_refs,
                "payload": mostly(st.just("Pay"), st.sampled_from(MODELS)),
                "internal": mostly(st.booleans(), junk()),
                "description": mostly(st.text(max_size=3), junk()),
                "bogus": junk(),
            },
        ),
    ),
    junk(),
)
state_docs = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "on": mostly(
                st.dictionaries(
                    event_names,
                    mostly(transition_docs, st.lists(transition_docs, max_size=2)),
                    max_size=3,
                ),
                junk(),
            ),
            "on_enter": hook_refs,
            "on_exit": hook_refs,
            "final": mostly(st.booleans(), junk()),
        },
    ),
    junk(),
)
machine_docs = mostly(
    st.fixed_dictionaries(
        {
            "name": mostly(st.sampled_from(["m", "ünï 😀", "'; DROP TABLE x; --"]), junk()),
            "initial": state_names,
            "states": mostly(
                st.dictionaries(state_names, state_docs, min_size=1, max_size=4), junk()
            ),
        },
        optional={
            "version": mostly(st.sampled_from(["1", "2"]), st.one_of(st.integers(0, 3), junk())),
            "context": mostly(st.just("Ctx"), st.sampled_from(MODELS)),
            "extra": junk(),
        },
    ),
    st.one_of(junk(), st.lists(junk(), max_size=2)),
)


def check_valid(machine: Machine) -> None:
    """What a machine that validated must also be able to do."""
    CompiledMachine(machine)
    json.dumps(machine.to_definition())
    assert len(machine.fingerprint) == 16
    assert machine.initial in machine.states
    for t in machine.all_transitions():
        assert t.destination in machine.states
        assert not machine.states[t.source].final


def validates_or_raises_spec_error(build: Callable[[], Machine]) -> None:
    """``build()`` gives a working machine or a SpecError with a message; nothing else."""
    problem = ""
    try:
        machine = build()
    except SpecError as exc:
        problem = exc.message
    else:
        check_valid(machine)
        return
    assert problem


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(machine_docs)
def test_random_documents_validate_or_raise_spec_error(doc: Any) -> None:
    validates_or_raises_spec_error(lambda: machine_from_mapping(doc, registry()))


def ok(ctx: Any, ev: Any) -> bool:
    return True


def try_transition(*args: Any, **kwargs: Any) -> Any:
    """transition(...), or a junk value where transition() itself says SpecError."""
    try:
        return transition(*args, **kwargs)
    except SpecError:
        return 42


python_hooks = mostly(
    st.one_of(
        st.none(),
        st.sampled_from(HOOKS[:3]),
        st.just(ok),
        st.just(effect(lambda call: None, name="py_fx")),
        st.lists(st.one_of(st.sampled_from(HOOKS[:4]), st.just(ok)), max_size=2),
    ),
    st.one_of(st.just("missing"), junk()),
)
python_transitions = mostly(
    st.one_of(
        state_names,
        st.builds(
            try_transition,
            mostly(state_names, st.none()),
            guard=python_hooks,
            unless=python_hooks,
            action=python_hooks,
            payload=mostly(st.sampled_from([None, Pay]), st.sampled_from([Ctx, dict, 3])),
            internal=mostly(st.just(False), st.just(True)),
        ),
    ),
    junk(),
)
python_states = mostly(
    st.builds(
        State,
        on=mostly(
            st.dictionaries(
                event_names,
                mostly(python_transitions, st.lists(python_transitions, max_size=2)),
                max_size=3,
            ),
            junk(),
        ),
        on_enter=python_hooks,
        on_exit=python_hooks,
        final=st.booleans(),
    ),
    junk(),
)


@SETTINGS
@given(
    name=mostly(st.sampled_from(["m", "ünï 😀"]), st.one_of(names, junk())),
    initial=mostly(state_names, st.one_of(hashable_junk, st.just([]))),
    states=mostly(
        st.dictionaries(mostly(state_names, hashable_junk), python_states, max_size=4), junk()
    ),
    context=mostly(st.sampled_from([None, Ctx]), st.sampled_from([Pay, dict, 3])),
    version=mostly(st.sampled_from(["1", "v2"]), st.one_of(st.just(""), st.integers(0, 2))),
    with_registry=mostly(st.just(True), st.just(False)),
)
def test_random_python_specs_validate_or_raise_spec_error(
    name: Any, initial: Any, states: Any, context: Any, version: Any, with_registry: bool
) -> None:
    validates_or_raises_spec_error(
        lambda: Machine(
            name,
            initial=initial,
            states=states,
            context=context,
            version=version,
            registry=registry() if with_registry else None,
        )
    )
