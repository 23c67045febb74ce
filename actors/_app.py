"""App: the set of object classes a node serves, and what of them is callable.

Guarantees
- Only public async methods are callable: a name without a leading underscore, defined by the user's class
  (not by :class:`DurableObject`), an ``async def``, and not a lifecycle hook (``on_start``, ``alarm``,
  ``on_connect``, ``on_message``, ``on_close``). Everything else is refused with UnknownMethod, never a
  silent success.
- Arguments are bound against the method's signature before the call is queued, so a wrong call fails
  with InvalidArgument naming the problem, and never reaches the object.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from ._ids import ObjectId, check_class_name
from ._object import LIFECYCLE_HOOKS, DurableObject
from .errors import InvalidArgument, LimitExceeded, UnknownClass, UnknownMethod
from .limits import MAX_METHOD_NAME_BYTES

__all__ = ["App"]


class Method:
    """A callable method and what its signature accepts."""

    __slots__ = ("_names", "_positional", "_required", "_simple", "name", "signature")

    def __init__(self, name: str, signature: inspect.Signature) -> None:
        self.name = name
        self.signature = signature
        params = list(signature.parameters.values())[1:]  # without self
        kinds = {p.kind for p in params}
        #: only plain positional-or-keyword / keyword-only parameters: the fast check is exact
        self._simple = kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}
        self._positional = tuple(
            p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        self._names = frozenset(p.name for p in params)
        self._required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise InvalidArgument unless ``method(*args, **kwargs)`` matches the signature."""
        if not args and not kwargs and not self._required:
            return  # no arguments, none required (the common call of a getter)
        if self._simple and len(args) <= len(self._positional):
            given = self._positional[: len(args)]
            if (
                self._names.issuperset(kwargs)
                and not any(name in kwargs for name in given)
                and self._required.issubset((*given, *kwargs))
            ):
                return
        try:  # the slow path explains exactly what is wrong
            self.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise InvalidArgument(f"{self.name}(): {exc}") from None


class App:
    """The object classes of an application, by class name."""

    def __init__(self, classes: Iterable[type[DurableObject]]) -> None:
        self.classes: dict[str, type[DurableObject]] = {}
        self._methods: dict[str, dict[str, Method]] = {}
        for cls in classes:
            self.add(cls)

    def add(self, cls: type[DurableObject]) -> None:
        """Register ``cls`` under its ``__name__`` (names must be unique within an App)."""
        if not (isinstance(cls, type) and issubclass(cls, DurableObject)) or cls is DurableObject:
            raise TypeError(f"{cls!r} is not a DurableObject subclass")
        name = cls.__name__
        check_class_name(name)
        existing = self.classes.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"two classes are named {name!r}")
        self.classes[name] = cls
        self._methods[name] = _public_methods(cls)

    def merged(self, other: App) -> App:
        """A new App with the classes of both (``other``'s win on a name clash only if identical)."""
        merged = App(self.classes.values())
        for cls in other.classes.values():
            merged.add(cls)
        return merged

    def class_of(self, name: str) -> type[DurableObject]:
        cls = self.classes.get(name)
        if cls is None:
            raise UnknownClass(f"no object class named {name!r}")
        return cls

    def method(self, class_name: str, method: str) -> Method:
        """The callable method, or UnknownClass / UnknownMethod / LimitExceeded."""
        methods = self._methods.get(class_name)
        if methods is None:
            self.class_of(class_name)
        assert methods is not None
        found = methods.get(method)
        if found is None:
            if type(method) is str and len(method.encode()) > MAX_METHOD_NAME_BYTES:
                raise LimitExceeded(
                    f"method name is over MAX_METHOD_NAME_BYTES ({MAX_METHOD_NAME_BYTES})",
                    limit="MAX_METHOD_NAME_BYTES",
                )
            raise UnknownMethod(f"{class_name} has no public async method {method!r}")
        return found

    def methods(self, class_name: str) -> list[str]:
        """Names of the callable methods of a class, sorted."""
        self.class_of(class_name)
        return sorted(self._methods[class_name])

    def id_from_name(self, cls: str | type[DurableObject], name: str) -> ObjectId:
        """The id of ``name`` in class ``cls`` (UnknownClass if the App lacks it)."""
        class_name = _class_name(cls)
        self.class_of(class_name)
        return ObjectId.from_name(class_name, name)

    def new_unique_id(self, cls: str | type[DurableObject]) -> ObjectId:
        """A fresh random id in class ``cls``, with no name."""
        class_name = _class_name(cls)
        self.class_of(class_name)
        return ObjectId.unique(class_name)


def _class_name(cls: str | type[DurableObject]) -> str:
    return cls if isinstance(cls, str) else cls.__name__


def _public_methods(cls: type[DurableObject]) -> dict[str, Method]:
    base_names = set(dir(DurableObject))
    methods: dict[str, Method] = {}
    for name in dir(cls):
        if name.startswith("_") or name in LIFECYCLE_HOOKS or name in base_names:
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, staticmethod | classmethod):
            continue
        if inspect.iscoroutinefunction(attr):
            methods[name] = Method(name, inspect.signature(attr))
    return methods
