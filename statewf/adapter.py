"""The one module that talks to the ``transitions`` library.

A :class:`CompiledMachine` is built once per machine name and version. It holds one
``transitions.Machine`` with no models attached; each decision drives a throw-away
model object through it, so firing an event costs a trigger, not a machine build.
Guards and actions are not called by ``transitions`` directly: every callback is a
small closure that hands the resolved :class:`~statewf.spec.Hook` to a
:class:`HookRunner`, which owns the context, the payload and the effect list. A
transition with no code to call (no guard; its actions and the states' exit and entry
hooks, if any, are effects, which only record their names) is fired without
``transitions`` at all: the same outcome, without its trigger's cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from transitions import Machine as _TMachine
from transitions import MachineError
from transitions import State as _TState

from statewf.hooks import Hook
from statewf.spec import Machine, ResolvedTransition


class HookRunner(Protocol):
    """What the adapter needs from a decision in progress."""

    def check(self, hook: Hook) -> bool:
        """Evaluate a guard."""

    def run(self, hook: Hook) -> None:
        """Run an action, or record an effect."""

    def taken(self, transition: ResolvedTransition) -> None:
        """Note which transition passed its guards."""


class _Model:
    """A stand-in model: ``transitions`` only reads and writes its ``state``."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


def _runner(event_data: Any) -> HookRunner:
    runner: HookRunner = event_data.kwargs["runner"]
    return runner


def _call_check(hook: Hook) -> Callable[[Any], bool]:
    return lambda event_data: _runner(event_data).check(hook)


def _call_run(hook: Hook) -> Callable[[Any], None]:
    return lambda event_data: _runner(event_data).run(hook)


def _call_taken(transition: ResolvedTransition) -> Callable[[Any], None]:
    return lambda event_data: _runner(event_data).taken(transition)


class CompiledMachine:
    """A machine spec compiled into one reusable ``transitions.Machine``."""

    def __init__(self, spec: Machine) -> None:
        self.spec = spec
        self._machine: _TMachine | None = None
        self.direct: dict[tuple[str, str], ResolvedTransition] = {}
        #: the effect hooks a direct transition records, in the order ``transitions``
        #: runs them: the transition's actions, the source's exit, the target's entry
        self.direct_hooks: dict[tuple[str, str], tuple[Hook, ...]] = {}
        #: their names, what a decision records
        self.direct_effects: dict[tuple[str, str], tuple[str, ...]] = {}
        if spec.chart is not None:
            # A statechart is decided by statewf's SCXML core (statewf.macrostep):
            # transitions' hierarchical machine lets every parallel region fire.
            return
        states = [
            _TState(
                name,
                on_enter=[_call_run(h) for h in state.on_enter],
                on_exit=[_call_run(h) for h in state.on_exit],
                final=state.final,
            )
            for name, state in spec.states.items()
        ]
        self._machine = _TMachine(
            model=None,
            states=states,
            initial=str(spec.initial),
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
            queued=False,
        )
        timers = [(timer.trigger, timer.transition) for timer in spec.all_timers()]
        events = [(t.event, t) for t in spec.all_transitions()]
        for trigger, t in [*events, *timers]:
            self._machine.add_transition(
                trigger=trigger,
                source=t.source,
                dest=t.target,
                conditions=[_call_check(h) for h in t.guards],
                unless=[_call_check(h) for h in t.unless],
                before=[_call_taken(t), *(_call_run(h) for h in t.actions)],
            )
        # (state, trigger) -> the transition taken with no code to call on the way:
        # the first candidate has no guard, it leaves the state (not internal), and
        # its actions and both states' exit and entry hooks are effects, which only
        # record their names. ``transitions`` takes exactly that one, changes only the
        # state and runs those hooks in this order (every machine-level callback is
        # empty here); firing it directly skips the trigger machinery.
        first: dict[tuple[str, str], ResolvedTransition] = {}
        for trigger, t in [*events, *timers]:
            first.setdefault((t.source, trigger), t)
        for key, t in first.items():
            if t.guards or t.unless or t.target is None:
                continue
            hooks = (*t.actions, *spec.states[key[0]].on_exit, *spec.states[t.target].on_enter)
            if all(hook.is_effect for hook in hooks):
                self.direct[key] = t
                self.direct_hooks[key] = hooks
                self.direct_effects[key] = tuple(hook.name for hook in hooks)

    def fire(self, state: str, event: str, runner: HookRunner) -> str | None:
        """Fire ``event`` (or a timer's trigger) from ``state``; None if every guard said no.

        Callers check that the event exists for the state first; exceptions raised by
        guards and actions propagate unchanged.
        """
        key = (state, event)
        direct = self.direct.get(key)
        if direct is not None:
            runner.taken(direct)
            for hook in self.direct_hooks[key]:
                runner.run(hook)  # effects only: each records its name
            return str(direct.target)
        model = _Model(state)
        assert self._machine is not None, "statecharts are not driven through transitions"
        try:
            accepted = self._machine.events[event].trigger(model, runner=runner)
        except MachineError as exc:  # pragma: no cover - callers pre-check the event
            raise LookupError(str(exc)) from exc
        return model.state if accepted else None

    def enter_initial(self, runner: HookRunner) -> None:
        """Run the initial state's entry actions, as creating an instance enters it."""
        assert isinstance(self.spec.initial, str)
        for hook in self.spec.states[self.spec.initial].on_enter:
            runner.run(hook)
