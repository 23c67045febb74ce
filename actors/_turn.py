"""Which turn the current task is running: the call chain travels with the task's context."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._activation import Activation


@dataclass(frozen=True, slots=True)
class TurnContext:
    activation: Activation
    chain: object  # identity of the call chain the turn belongs to


#: the turn the current task is running, if any (carries the call chain into outgoing calls;
#: tasks a turn starts inherit it, as trio copies the context into child tasks)
current_turn: contextvars.ContextVar[TurnContext | None] = contextvars.ContextVar(
    "actors_current_turn", default=None
)
