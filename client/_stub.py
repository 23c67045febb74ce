"""Stubs: a remote object whose attributes are its methods.

``client.get(Counter, "home")`` is typed as ``Counter`` (a type checker sees ``increment``'s real
signature), but at run time it is a :class:`Stub`: any public attribute is a :class:`RemoteMethod`,
and calling it sends the call. Nothing is checked locally beyond what the SDK must (plain-value
arguments, the object name's limits); the node decides whether the method exists (UnknownMethod).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["RemoteMethod", "Stub"]


@final
class RemoteMethod:
    """One method of one remote object; calling it returns the call's coroutine."""

    __slots__ = ("_client", "_cls", "_hex", "_method", "_name", "_timeout")

    def __init__(self, client: Client, cls: str, name: str, hex: str, method: str, timeout: float | None):
        self._client = client
        self._cls = cls
        self._name = name
        self._hex = hex
        self._method = method
        self._timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return self._client.send_call(
            self._cls, self._name, self._hex, self._method, args, kwargs, self._timeout
        )

    def __repr__(self) -> str:
        return f"<remote method {self._cls}/{self._name}.{self._method}>"


@final
class Stub:
    """A remote object of class ``cls`` named ``name``: ``await stub.increment(by=2)``.

    Every call has the stub's ``timeout`` (None: the client's). Attributes starting with ``_`` are
    not remote methods (the node refuses private methods anyway) and raise AttributeError.
    """

    def __init__(self, client: Client, cls: str, name: str, hex: str, timeout: float | None) -> None:
        self._client = client
        self._cls = cls
        self._name = name
        self._hex = hex
        self._timeout = timeout

    def __getattr__(self, method: str) -> RemoteMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        bound = RemoteMethod(self._client, self._cls, self._name, self._hex, method, self._timeout)
        self.__dict__[method] = bound  # the next lookup finds it without __getattr__
        return bound

    def __repr__(self) -> str:
        return f"<stub {self._cls}/{self._name}>"
