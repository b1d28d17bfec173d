"""Machines from SCXML documents without a datamodel (the W3C null datamodel).

Read: ``scxml``, ``state``, ``parallel``, ``final``, ``history``, ``initial``,
``transition`` (``event``, ``cond``, ``target``, ``type``), ``onentry``/``onexit``
with ``raise``, ``send`` (``event``, ``delay``, ``id``, ``target="#_internal"``),
``cancel`` (``sendid``) and ``log``. A ``cond`` names a guard of the
:class:`~statewf.hooks.Registry` or is ``In('state-id')``; nothing is evaluated.
Anything else is a :class:`~statewf.errors.SpecError` that lists every element and
attribute it could not read. Unreachable states are kept, with a
:class:`~statewf.errors.SpecWarning`. A document's machine discards events no
transition takes, as the SCXML interpreter does.
"""

from __future__ import annotations

import hashlib
import re
import warnings
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

from statewf.chart.model import Cancel, History, In, Log, Raise, Send
from statewf.errors import SpecError, SpecWarning
from statewf.hooks import Registry
from statewf.spec import Machine, State, Transition, transition

SCXML_NS = "http://www.w3.org/2005/07/scxml"
_INTERNAL = "#_internal"
_SCXML_PROCESSORS = (None, "http://www.w3.org/TR/scxml/#SCXMLEventProcessor", "scxml")
_IN = re.compile(r"""^\s*(!|not\s+)?\s*In\(\s*(['"])([^'"]+)\2\s*\)\s*$""")
_AND = re.compile(r"\s*(?:&&|\band\b)\s*")


def never(ctx: Any, payload: Any) -> bool:
    """The guard of ``cond="false"``."""
    return False


_DELAY = re.compile(r"^\s*(\d*\.?\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_ALLOWED: dict[str, set[str]] = {
    # profile and exmode come from earlier drafts of the recommendation
    "scxml": {"initial", "name", "version", "datamodel", "binding", "profile", "exmode"},
    "state": {"id", "initial"},
    "parallel": {"id"},
    "final": {"id"},
    "history": {"id", "type"},
    "initial": set(),
    "transition": {"event", "cond", "target", "type"},
    "onentry": set(),
    "onexit": set(),
    "raise": {"event"},
    "send": {"event", "delay", "id", "target", "type"},
    "cancel": {"sendid"},
    "log": {"label", "expr"},
}
_STATES = {"state", "parallel", "final", "history"}
FOREIGN = "(foreign)"
_CONTENT = {"raise", "send", "cancel", "log"}


class _Reader:
    """One document's conversion to a :class:`State` tree; problems are collected."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.ids: set[str] = set()
        self._generated = 0

    def tag(self, el: ET.Element) -> str:
        if el.tag.startswith(f"{{{SCXML_NS}}}"):
            return el.tag[len(SCXML_NS) + 2 :]
        if el.tag.startswith("{"):
            return FOREIGN  # an element of another namespace: ignored (SCXML 3.1)
        return el.tag

    def check(self, el: ET.Element, where: str) -> str:
        tag = self.tag(el)
        if tag == FOREIGN:
            return tag
        allowed = _ALLOWED.get(tag)
        if allowed is None:
            self.problems.append(f"{where}: element <{tag}> is not supported")
            return tag
        for attr in el.attrib:
            if attr.startswith("{"):
                continue  # attributes of other namespaces are not SCXML's
            if attr not in allowed:
                self.problems.append(f"{where}: attribute {attr!r} of <{tag}> is not supported")
        return tag

    def new_id(self, tag: str) -> str:
        while True:
            self._generated += 1
            candidate = f"_{tag}{self._generated}"
            if candidate not in self.ids:
                self.ids.add(candidate)
                return candidate

    def collect_ids(self, root: ET.Element) -> None:
        for el in root.iter():
            if self.tag(el) in _STATES and el.get("id"):
                self.ids.add(el.attrib["id"])

    # ------------------------------------------------------------ states

    def children(self, el: ET.Element, where: str) -> dict[str, State | History]:
        states: dict[str, State | History] = {}
        for child in el:
            tag = self.tag(child)
            if tag not in _STATES:
                continue
            sid = child.get("id") or self.new_id(tag)
            child.set("id", sid)
            key = sid.replace(".", "_")
            while key in states:
                key += "_"
            states[key] = self.state(child, tag, sid)
        return states

    def state(self, el: ET.Element, tag: str, sid: str) -> State | History:
        where = f"<{tag} id={sid!r}>"
        self.check(el, where)
        if tag == "history":
            default: Transition | None = None
            for child in el:
                if self.check(child, where) == "transition":
                    default = self.transition(child, where)
                else:
                    self.problems.append(f"{where}: a history state holds one <transition>")
            kind = el.get("type", "shallow")
            if kind not in ("shallow", "deep"):
                self.problems.append(f"{where}: type must be 'shallow' or 'deep'")
            return History(deep=kind == "deep", default=default, id=sid)
        on_enter: list[Any] = []
        on_exit: list[Any] = []
        transitions: list[Transition] = []
        initial: Any = None
        for child in el:
            ctag = self.check(child, where)
            if ctag == "onentry":
                on_enter += self.content(child, f"{where} <onentry>")
            elif ctag == "onexit":
                on_exit += self.content(child, f"{where} <onexit>")
            elif ctag == "transition" and tag != "final":
                transitions.append(self.transition(child, where))
            elif ctag == "initial" and tag == "state":
                initial = self.initial_element(child, where)
            elif ctag == FOREIGN:
                continue
            elif ctag not in _STATES or tag == "final":
                self.problems.append(f"{where}: <{ctag}> cannot appear here")
        states = self.children(el, where) if tag != "final" else {}
        if el.get("initial") is not None:
            if initial is not None:
                self.problems.append(f"{where}: both an initial attribute and an <initial>")
            initial = [f"#{i}" for i in el.attrib["initial"].split()]
        if tag == "state" and initial is not None and not states:
            self.problems.append(f"{where}: an initial on a state without children")
            initial = None
        return State(
            id=sid,
            states=states,
            initial=initial,
            parallel=tag == "parallel",
            final=tag == "final",
            on_enter=on_enter or None,
            on_exit=on_exit or None,
            transitions=transitions,
        )

    def initial_element(self, el: ET.Element, where: str) -> Transition | None:
        found = [c for c in el if self.check(c, f"{where} <initial>") == "transition"]
        if len(found) != 1 or len(el) != 1:
            self.problems.append(f"{where}: <initial> holds exactly one <transition>")
            return None
        t = self.transition(found[0], f"{where} <initial>")
        if t.target is None:
            self.problems.append(f"{where}: the <initial> transition needs a target")
        return t

    # ------------------------------------------------------------ transitions

    def transition(self, el: ET.Element, where: str) -> Transition:
        where = f"{where} <transition event={el.get('event')!r}>"
        targets = [f"#{t}" for t in el.get("target", "").split()]
        guard, unless = self.cond(el.get("cond"), where)
        kind = el.get("type", "external")
        if kind not in ("external", "internal"):
            self.problems.append(f"{where}: type must be 'external' or 'internal'")
        event = " ".join(el.get("event", "").split()) or None
        return transition(
            targets or None,
            event=event,
            guard=guard,
            unless=unless,
            action=self.content(el, where),
            type=kind if kind in ("external", "internal") else "external",
        )

    def cond(self, cond: str | None, where: str) -> tuple[list[Any], list[Any]]:
        """The guards and unless-guards of a ``cond``: In() terms, guard names, true/false."""
        guards: list[Any] = []
        unless: list[Any] = []
        if cond is None or cond.strip() == "true":
            return guards, unless
        if cond.strip() == "false":
            return [never], unless
        for term in _AND.split(cond.strip()):
            match = _IN.match(term)
            if match:
                (unless if match.group(1) else guards).append(In(match.group(3)))
            elif re.fullmatch(r"[A-Za-z_][\w.\-]*", term) and term not in ("and", "or", "not"):
                guards.append(term)
            else:
                self.problems.append(
                    f"{where}: cond {cond!r} is not a guard name, In('id'), their "
                    "conjunction or negation; documents without a datamodel evaluate no "
                    "expressions"
                )
                break
        return guards, unless

    def content(self, el: ET.Element, where: str) -> list[Any]:
        found: list[Any] = []
        for child in el:
            tag = self.check(child, where)
            if tag == "raise":
                if not child.get("event"):
                    self.problems.append(f"{where}: <raise> needs an event")
                found.append(Raise(child.get("event", "")))
            elif tag == "send":
                found.append(self.send(child, where))
            elif tag == "cancel":
                if not child.get("sendid"):
                    self.problems.append(f"{where}: <cancel> needs a sendid")
                found.append(Cancel(child.get("sendid", "")))
            elif tag == "log":
                found.append(Log(child.get("label", ""), child.get("expr", "")))
            elif tag in _ALLOWED:
                self.problems.append(f"{where}: <{tag}> is not executable content")
        return found

    def send(self, el: ET.Element, where: str) -> Send:
        where = f"{where} <send event={el.get('event')!r}>"
        if len(el):
            self.problems.append(f"{where}: <param> and <content> are not supported")
        if not el.get("event"):
            self.problems.append(f"{where}: <send> needs an event")
        target = el.get("target")
        if target not in (None, _INTERNAL):
            self.problems.append(f"{where}: target {target!r} is not supported (only #_internal)")
        if el.get("type") not in _SCXML_PROCESSORS:
            self.problems.append(f"{where}: type {el.get('type')!r} is not supported")
        delay: timedelta | None = None
        if el.get("delay"):
            match = _DELAY.match(el.attrib["delay"])
            if match is None:
                self.problems.append(f"{where}: delay {el.attrib['delay']!r} is not a CSS2 time")
            else:
                delay = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        if delay is not None and target == _INTERNAL:
            self.problems.append(f"{where}: a delayed send cannot target #_internal")
        return Send(el.get("event", ""), delay=delay, id=el.get("id"), internal=target == _INTERNAL)


def machine_from_scxml(
    text: str | bytes,
    registry: Registry | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
    default_name: str = "scxml",
    ignore_unmatched: bool = True,
) -> Machine:
    """Build a :class:`Machine` from the text of an SCXML document without a datamodel.

    The name is ``name``, else the document's ``name`` attribute, else ``default_name``
    (``load_machine`` passes the file's stem); the
    version is ``version``, else a hash of the document, so a changed document is a
    new version and its running instances keep the one they started with.
    ``ignore_unmatched=False`` raises ``UnknownEvent``/``GuardRejected`` for events no
    transition takes, as Python machines do, instead of discarding them.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SpecError(f"SCXML document is not well-formed XML: {exc}") from exc
    reader = _Reader()
    if reader.check(root, "the document") != "scxml":
        raise SpecError(f"an SCXML document's root is <scxml>, not <{reader.tag(root)}>")
    reader.collect_ids(root)
    for child in root:
        tag = reader.tag(child)
        if tag != FOREIGN and (tag not in _STATES or tag == "history"):
            reader.check(child, "<scxml>")
            reader.problems.append(f"<scxml>: <{tag}> cannot appear here")
    states = reader.children(root, "<scxml>")
    declared = root.get("datamodel")
    if reader.problems and declared not in (None, "null"):
        # a declared datamodel is fine as long as nothing in the document needs it
        reader.problems.insert(
            0,
            f"the document declares datamodel {declared!r} and uses it; statewf reads "
            "documents without a datamodel",
        )
    if reader.problems:
        raise SpecError(
            "SCXML document cannot be read: " + "; ".join(reader.problems),
            problems=reader.problems,
        )
    if not states:
        raise SpecError("SCXML document has no states")
    initial_attr = root.get("initial")
    first = next(iter(states.values()))
    initial: str | list[str] = (
        [f"#{i}" for i in initial_attr.split()] if initial_attr else f"#{first.id}"
    )
    raw = text.encode() if isinstance(text, str) else text
    machine = Machine(
        name or root.get("name") or default_name,
        version=version or hashlib.sha256(raw).hexdigest()[:12],
        initial=initial,
        states=states,
        registry=registry,
        statechart=True,
        allow_unreachable=True,
        ignore_unmatched=ignore_unmatched,
    )
    if machine.unreachable:
        warnings.warn(
            f"SCXML machine {machine.name!r}: states no run can enter: "
            + ", ".join(machine.unreachable),
            SpecWarning,
            stacklevel=2,
        )
    return machine
