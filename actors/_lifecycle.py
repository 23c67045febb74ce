"""The activation state machine, as a table (like h11's ``_state.py``): illegal moves raise."""

from __future__ import annotations

import enum


class ActivationState(enum.Enum):
    #: opening the file and running ``on_start``; calls queue up
    ACTIVATING = "activating"
    #: serving turns
    ACTIVE = "active"
    #: closing: no new call is routed here; the next call waits, then activates afresh
    EVICTING = "evicting"
    #: gone; the instance and file handle are released
    EVICTED = "evicted"


_TRANSITIONS: dict[ActivationState, frozenset[ActivationState]] = {
    ActivationState.ACTIVATING: frozenset({ActivationState.ACTIVE, ActivationState.EVICTING}),
    ActivationState.ACTIVE: frozenset({ActivationState.EVICTING}),
    ActivationState.EVICTING: frozenset({ActivationState.EVICTED}),
    ActivationState.EVICTED: frozenset(),
}


def check_transition(old: ActivationState, new: ActivationState) -> None:
    if new not in _TRANSITIONS[old]:
        raise RuntimeError(f"illegal activation transition {old.value} -> {new.value}")
