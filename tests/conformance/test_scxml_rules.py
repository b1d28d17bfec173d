"""One test per rule of the SCXML algorithm (W3C recommendation, section 3.13 and appendix D).

Each test is written from the specification's text, on a small SCXML document, and
runs through the pure core (tests/conformance/driver.py); the engine-level behaviour
of the same rules is covered by test_scxml_cases.py on both stores.
"""

from __future__ import annotations

from typing import Any

import pytest

from statewf import In, Machine, MacrostepLimit, Raise, Registry, Send, State, transition
from tests.conformance.driver import Run, scxml

NS = 'xmlns="http://www.w3.org/2005/07/scxml" version="1.0"'


def doc(body: str, initial: str = "") -> str:
    first = f' initial="{initial}"' if initial else ""
    return f"<scxml {NS}{first}>{body}</scxml>"


def logs(run: Run) -> list[str]:
    """The <log label=.../> labels of the last record, in the order they ran."""
    return [entry["label"] for step in run.microsteps for entry in step.get("logs", [])]


# ------------------------------------------------------------------ selection


def test_document_order_first_enabled_transition_of_a_state_wins() -> None:
    # 3.13: "the first transition in document order ... whose event and condition match"
    run = Run(
        scxml(
            doc(
                '<state id="s"><transition event="e" target="b"/>'
                '<transition event="e" target="c"/></state>'
                '<state id="b"/><state id="c"/>'
            )
        )
    )
    assert run.send("e").state_ids == ("b",)


def test_a_descendant_transition_takes_priority_over_its_ancestors() -> None:
    # selectTransitions looks at the atomic state first, then its proper ancestors.
    run = Run(
        scxml(
            doc(
                '<state id="p"><transition event="e" target="outer"/>'
                '<state id="a"><transition event="e" target="b"/></state><state id="b"/></state>'
                '<state id="outer"/>'
            )
        )
    )
    assert run.send("e").state_ids == ("b",)


def test_a_transition_leaving_a_parallel_state_preempts_the_later_regions() -> None:
    # removeConflictingTransitions: t1 (region r1, earlier in document order) exits the
    # parallel state; t2 (region r2) has an intersecting exit set and its source is not a
    # descendant of t1's, so t2 is pre-empted. Only t1's actions run.
    run = Run(
        scxml(
            doc(
                '<parallel id="p">'
                '<state id="r1"><state id="a1"><transition event="e" target="out">'
                '<log label="t1"/></transition></state></state>'
                '<state id="r2"><state id="a2"><transition event="e" target="b2">'
                '<log label="t2"/></transition></state><state id="b2"/></state>'
                '</parallel><state id="out"/>'
            )
        )
    )
    assert run.send("e").state_ids == ("out",)
    assert logs(run) == ["t1"]


def test_regions_of_a_parallel_state_each_take_their_transition() -> None:
    # the optimal enabled transition set: non-conflicting transitions all fire, in one microstep
    run = Run(
        scxml(
            doc(
                '<parallel id="p">'
                '<state id="r1"><state id="a1"><transition event="e" target="b1"/></state>'
                '<state id="b1"/></state>'
                '<state id="r2"><state id="a2"><transition event="e" target="b2"/></state>'
                '<state id="b2"/></state></parallel>'
            )
        )
    )
    assert run.send("e").state_ids == ("b1", "b2")
    assert len(run.microsteps) == 1
    assert len(run.microsteps[0]["transitions"]) == 2


def test_a_region_transition_preempts_the_parallel_states_own_transition() -> None:
    # p's transition is selected through a1 (which has none); a2's own transition
    # conflicts with it and its source is a descendant of p: p's transition is removed.
    run = Run(
        scxml(
            doc(
                '<parallel id="p"><transition event="e" target="out"/>'
                '<state id="r1"><state id="a1"/></state>'
                '<state id="r2"><state id="a2"><transition event="e" target="b2"/></state>'
                '<state id="b2"/></state></parallel><state id="out"/>'
            )
        )
    )
    assert run.send("e").state_ids == ("a1", "b2")


# ------------------------------------------------------------------ exit and entry


def test_exit_in_reverse_document_order_then_transition_content_then_entry_in_order() -> None:
    body = (
        '<state id="s" initial="p"><parallel id="p">'
        '<onexit><log label="exit p"/></onexit>'
        '<state id="r1"><onexit><log label="exit r1"/></onexit>'
        '<state id="x1"><onexit><log label="exit x1"/></onexit></state></state>'
        '<state id="r2"><onexit><log label="exit r2"/></onexit>'
        '<state id="x2"><onexit><log label="exit x2"/></onexit></state></state>'
        '<transition event="go" target="q"><log label="transition"/></transition>'
        "</parallel>"
        '<state id="q" initial="q2"><onentry><log label="enter q"/></onentry>'
        '<state id="q1"/><state id="q2"><onentry><log label="enter q2"/></onentry></state>'
        "</state></state>"
    )
    run = Run(scxml(doc(body)))
    run.send("go")
    assert logs(run) == [
        "exit x2",
        "exit r2",
        "exit x1",
        "exit r1",
        "exit p",
        "transition",
        "enter q",
        "enter q2",
    ]
    assert run.microsteps[0]["exited"] == ["s.p.r2.x2", "s.p.r2", "s.p.r1.x1", "s.p.r1", "s.p"]
    assert run.microsteps[0]["entered"] == ["s.q", "s.q.q2"]


def test_external_self_transition_exits_and_reenters_internal_does_not() -> None:
    def machine(kind: str) -> Machine:
        return scxml(
            doc(
                '<state id="s"><onentry><log label="enter s"/></onentry>'
                '<onexit><log label="exit s"/></onexit>'
                f'<transition event="e" type="{kind}" target="b"/>'
                '<state id="a"/><state id="b"/></state>'
            )
        )

    external, internal = Run(machine("external")), Run(machine("internal"))
    external.send("e")
    internal.send("e")
    assert logs(external) == ["exit s", "enter s"]
    assert logs(internal) == []
    assert external.snapshot.state_ids == internal.snapshot.state_ids == ("b",)


def test_an_external_transition_of_a_region_to_its_own_child_exits_the_parallel_state() -> None:
    # 3.13: the exit set is everything below the Least Common *Compound* Ancestor of
    # source and targets; a <parallel> is not compound, so a transition on region a
    # targeting a2 exits (and re-enters) the whole parallel state p, and pre-empts
    # region b's transition for the same event. Some suites written before the
    # recommendation was final expect ["a2", "b2"] here; python-statemachine and the
    # recommendation's pseudo-code give ["a2", "b1"]. type="internal" keeps p.
    body = (
        '<parallel id="p"><state id="a"><transition event="t" type="{kind}" target="a2"/>'
        '<state id="a1"/><state id="a2"/></state>'
        '<state id="b"><state id="b1"><transition event="t" target="b2"/></state>'
        '<state id="b2"/></state></parallel>'
    )
    assert Run(scxml(doc(body.format(kind="external")))).send("t").state_ids == ("a2", "b1")
    assert Run(scxml(doc(body.format(kind="internal")))).send("t").state_ids == ("a2", "b2")


def test_transition_between_siblings_keeps_their_least_common_compound_ancestor() -> None:
    run = Run(
        scxml(
            doc(
                '<state id="top"><onexit><log label="exit top"/></onexit>'
                '<state id="m"><state id="a"><transition event="e" target="b"/></state>'
                '<state id="b"/></state></state>'
            )
        )
    )
    run.send("e")
    assert run.microsteps[0]["exited"] == ["top.m.a"]
    assert logs(run) == []


def test_initial_may_name_deep_descendants_in_several_regions_and_run_actions() -> None:
    run = Run(
        scxml(
            doc(
                '<state id="s"><initial><transition target="x2 y2">'
                '<log label="initial"/></transition></initial>'
                '<parallel id="p"><state id="x"><state id="x1"/><state id="x2"/></state>'
                '<state id="y"><state id="y1"/><state id="y2"/></state></parallel></state>'
            )
        )
    )
    assert run.ids == ["x2", "y2"]
    assert logs(run) == ["initial"]


PARALLEL_AB = (
    '<parallel id="p"><state id="a" initial="a1"><state id="a1"/><state id="a2"/></state>'
    '<state id="b" initial="b1"><state id="b1"/><state id="b2"/></state></parallel>'
)


@pytest.mark.parametrize(
    "where",
    ["scxml", "state"],
    ids=["initial attribute of <scxml>", "initial attribute of <state>"],
)
def test_an_initial_attribute_with_several_ids_enters_all_of_them(where: str) -> None:
    """SCXML 3.2/3.3: ``initial="a2 b2"`` is one initial transition with two targets."""
    if where == "scxml":
        machine = scxml(doc(f'<state id="s">{PARALLEL_AB}</state>', initial="a2 b2"))
    else:
        machine = scxml(doc(f'<state id="s" initial="a2 b2">{PARALLEL_AB}</state>'))
    assert Run(machine).ids == ["a2", "b2"]


def test_python_initial_may_list_one_target_per_region() -> None:
    region = {"one": State(), "two": State()}
    machine = Machine(
        "regions",
        initial=["p.a.two", "p.b.two"],
        states={
            "p": State(
                parallel=True,
                states={"a": State(initial="one", states=dict(region)),
                        "b": State(initial="one", states=dict(region))},
            )
        },
    )
    assert Run(machine).snapshot.configuration == ("p.a.two", "p.b.two")


# ------------------------------------------------------------------ history


HISTORY = (
    '<state id="s" initial="a"><history id="h" type="{kind}">'
    '<transition target="a"/></history>'
    '<state id="a" initial="a1"><state id="a1"><transition event="n" target="a2"/></state>'
    '<state id="a2"/></state>'
    '<transition event="out" target="o"/></state>'
    '<state id="o"><transition event="back" target="h"/></state>'
)


def test_shallow_history_restores_the_child_which_enters_its_default() -> None:
    run = Run(scxml(doc(HISTORY.format(kind="shallow"))))
    run.send("n")
    run.send("out")
    assert run.snapshot.history == {"s.h": ("s.a",)}
    assert run.send("back").state_ids == ("a1",)


def test_deep_history_restores_the_leaf_states() -> None:
    run = Run(scxml(doc(HISTORY.format(kind="deep"))))
    run.send("n")
    run.send("out")
    assert run.snapshot.history == {"s.h": ("s.a.a2",)}
    assert run.send("back").state_ids == ("a2",)


def test_history_never_left_takes_its_default_transition() -> None:
    run = Run(
        scxml(
            doc(
                '<state id="o"><transition event="go" target="h"/></state>'
                '<state id="s"><history id="h"><transition target="b">'
                '<log label="default"/></transition></history>'
                '<state id="a"/><state id="b"/></state>'
            )
        )
    )
    assert run.send("go").state_ids == ("b",)
    assert logs(run) == ["default"]


# ------------------------------------------------------------------ eventless and raise


def test_eventless_transitions_run_to_completion_in_one_macrostep() -> None:
    run = Run(
        scxml(
            doc(
                '<state id="a"><transition event="e" target="b"/></state>'
                '<state id="b"><transition target="c"/></state>'
                '<state id="c"><transition cond="In(\'c\')" target="d"/></state><state id="d"/>'
            )
        )
    )
    assert run.send("e").state_ids == ("d",)
    assert [len(step["transitions"]) for step in run.microsteps] == [1, 1, 1]
    assert len(run.log) == 2  # one row for the outside event


def test_raised_events_are_handled_in_order_before_the_next_outside_event() -> None:
    run = Run(
        scxml(
            doc(
                '<state id="a"><transition event="e" target="b">'
                '<raise event="one"/><raise event="two"/></transition></state>'
                '<state id="b"><transition event="two" target="fail"/>'
                '<transition event="one" target="c"/></state>'
                '<state id="c"><transition event="two" target="pass"/></state>'
                '<final id="pass"/><final id="fail"/>'
            )
        )
    )
    assert run.send("e").state_ids == ("pass",)
    assert run.snapshot.status == "final"


def test_eventless_transitions_go_before_internal_events() -> None:
    run = Run(
        scxml(
            doc(
                '<state id="a"><onentry><raise event="i"/></onentry>'
                '<transition target="b"/><transition event="i" target="fail"/></state>'
                '<state id="b"><transition event="i" target="pass"/></state>'
                '<final id="pass"/><final id="fail"/>'
            )
        )
    )
    assert run.ids == ["pass"]


def test_send_without_delay_waits_for_the_end_of_the_macrostep() -> None:
    # <send> (no target) goes to the external queue: the raised event is handled first.
    run = Run(
        scxml(
            doc(
                '<state id="a"><onentry><send event="ext"/><raise event="int"/></onentry>'
                '<transition event="ext" target="fail"/><transition event="int" target="b"/>'
                "</state>"
                '<state id="b"><transition event="ext" target="pass"/></state>'
                '<final id="pass"/><final id="fail"/>'
            )
        )
    )
    assert run.ids == ["pass"]


def test_a_macrostep_that_never_settles_is_refused_and_nothing_changes() -> None:
    machine = scxml(
        doc(
            '<state id="a"><transition event="go" target="b"/></state>'
            '<state id="b"><transition target="c"/></state>'
            '<state id="c"><transition target="b"/></state>'
        )
    )
    run = Run(machine)
    before = run.snapshot
    with pytest.raises(MacrostepLimit, match="did not settle"):
        run.send("go")
    assert run.snapshot == before
    assert len(run.log) == 1


# ------------------------------------------------------------------ done events


def test_done_state_event_when_a_compound_state_reaches_a_final_child() -> None:
    run = Run(
        scxml(
            doc(
                '<state id="s"><transition event="done.state.s" target="pass"/>'
                '<state id="a"><transition event="e" target="f"/></state><final id="f"/></state>'
                '<final id="pass"/>'
            )
        )
    )
    assert run.send("e").state_ids == ("pass",)
    assert run.snapshot.status == "final"


def test_done_state_of_a_parallel_state_waits_for_every_region() -> None:
    body = (
        '<parallel id="p"><transition event="done.state.p" target="pass"/>'
        '<state id="r1"><state id="a"><transition event="e1" target="f1"/></state>'
        '<final id="f1"/></state>'
        '<state id="r2"><state id="b"><transition event="e2" target="f2"/></state>'
        '<final id="f2"/></state></parallel><final id="pass"/>'
    )
    run = Run(scxml(doc(body)))
    assert run.send("e1").state_ids == ("f1", "b")
    assert run.send("e2").state_ids == ("pass",)


def test_on_done_in_python_matches_only_its_own_state() -> None:
    # done.state.<child id> of a region must not prefix-match the parallel's on_done
    machine = Machine(
        "m",
        initial="p",
        states={
            "p": State(
                parallel=True,
                on_done="end",
                states={
                    "r1": State(
                        initial="a", states={"a": State(on={"E": "f"}), "f": State(final=True)}
                    ),
                    "r2": State(
                        initial="b", states={"b": State(on={"F": "g"}), "g": State(final=True)}
                    ),
                },
            ),
            "end": State(final=True),
        },
    )
    run = Run(machine)
    assert run.send("E").configuration == ("p.r1.f", "p.r2.b")
    assert run.send("F").configuration == ("end",)


# ------------------------------------------------------------------ descriptors


@pytest.mark.parametrize(
    ("descriptor", "event", "taken"),
    [
        ("ORDER", "ORDER.PAID", True),
        ("ORDER", "ORDER", True),
        ("ORDER", "ORDERS", False),
        ("ORDER.*", "ORDER.PAID.LATE", True),
        ("ORDER.*", "ORDER", True),
        ("ORDER.PAID", "ORDER", False),
        ("*", "anything.at.all", True),
        ("A B", "B.x", True),
    ],
)
def test_event_descriptors_match_by_token_prefix(descriptor: str, event: str, taken: bool) -> None:
    run = Run(
        scxml(
            doc(
                f'<state id="a"><transition event="{descriptor}" target="b"/></state>'
                '<state id="b"/>'
            )
        )
    )
    assert run.send(event).state_ids == (("b",) if taken else ("a",))


# ------------------------------------------------------------------ time


def test_delayed_send_fires_later_and_cancel_removes_it() -> None:
    body = (
        '<state id="a"><onentry><send event="remind" delay="3s" id="r"/>'
        '<send event="expire" delay="10s" id="x"/></onentry>'
        '<transition event="remind" target="b"/></state>'
        '<state id="b"><onentry><cancel sendid="x"/></onentry>'
        '<transition event="expire" target="fail"/></state><final id="fail"/>'
    )
    run = Run(scxml(doc(body)))
    assert [t.id for t in run.snapshot.timers] == ["r", "x"]
    assert run.advance(2).state_ids == ("a",)
    assert run.advance(1).state_ids == ("b",)
    assert run.snapshot.timers == ()
    assert run.advance(60).state_ids == ("b",)


def test_after_on_a_nested_state_is_cancelled_when_that_state_is_left() -> None:
    machine = Machine(
        "m",
        initial="p",
        states={
            "p": State(
                parallel=True,
                states={
                    "x": State(
                        initial="slow",
                        states={
                            "slow": State(after={"10 seconds": "late"}, on={"FAST": "quick"}),
                            "quick": State(),
                            "late": State(),
                        },
                    ),
                    "y": State(
                        initial="y1", states={"y1": State(after={"5 seconds": "y2"}), "y2": State()}
                    ),
                },
            )
        },
    )
    run = Run(machine)
    assert [t.state for t in run.snapshot.timers] == ["p.y.y1", "p.x.slow"]
    run.send("FAST")
    assert [t.state for t in run.snapshot.timers] == ["p.y.y1"]
    assert run.advance(60).configuration == ("p.x.quick", "p.y.y2")


def test_python_actions_raise_and_send_like_scxml() -> None:
    registry = Registry()
    seen: list[str] = []

    @registry.action
    def note(ctx: Any, payload: Any) -> None:
        seen.append("note")

    machine = Machine(
        "m",
        initial="a",
        registry=registry,
        states={
            "a": State(
                on={
                    "GO": transition(
                        "b", action=[Raise("NEXT"), Send("LATER", delay="1 hour", id="l")]
                    )
                }
            ),
            "b": State(on={"NEXT": transition("c", action="note")}),
            "c": State(on={"LATER": "d"}),
            "d": State(always=transition("e", guard=In("d"))),
            "e": State(),
        },
    )
    run = Run(machine)
    assert run.send("GO").configuration == ("c",)
    assert seen == ["note"]
    assert run.advance(3600).configuration == ("e",)


def test_guards_from_a_registry_decide_scxml_conditions() -> None:
    registry = Registry()

    @registry.guard
    def big(ctx: Any, payload: Any) -> bool:
        return bool((payload or {}).get("n", 0) > 10)

    machine = scxml(
        doc(
            '<state id="a"><transition event="n" cond="big" target="big"/>'
            '<transition event="n" target="small"/></state><state id="big"/><state id="small"/>'
        ),
        registry,
    )
    assert Run(machine).send("n", {"n": 11}).state_ids == ("big",)
    assert Run(machine).send("n", {"n": 1}).state_ids == ("small",)
