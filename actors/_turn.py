"""Which turn the current task is running: the call chain travels with the task's context."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._activation import Activation


class TurnContext:
    """The running turn's activation and call chain (never changed once made).

    A plain slotted class rather than a frozen dataclass: one is made per turn, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) costs several times as much.
    """

    __slots__ = ("activation", "chain")

    def __init__(self, activation: Activation, chain: object) -> None:
        self.activation: Final = activation
        self.chain: Final = chain  # identity of the call chain the turn belongs to


#: the turn the current task is running, if any (carries the call chain into outgoing calls;
#: tasks a turn starts inherit it, as trio copies the context into child tasks)
current_turn: contextvars.ContextVar[TurnContext | None] = contextvars.ContextVar(
    "actors_current_turn", default=None
)
