"""Plain slotted record classes: what ``@dataclass(slots=True)`` (and ``frozen=True``) generates
(equality, repr, ``replace``, hashing), for the classes every command loads.

A subclass lists its fields in ``__slots__`` (the order of its ``__init__``'s parameters) and
writes its ``__init__``.  Creating a dataclass costs about 1 ms at import (its methods are compiled
from source), and importing :mod:`dataclasses` brings :mod:`inspect`, :mod:`ast`, :mod:`dis` and
:mod:`tokenize`: 14-19 ms of ``python3 -X importtime`` for ``pycatar list`` of a small archive
(2026-12-03), a fifth of its imports.
"""

from __future__ import annotations


class Record:
    """Equality field by field (with an instance of the same class), a repr naming every field,
    and :meth:`replace`; unhashable, as a dataclass with ``eq=True`` is."""

    __slots__ = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{self.__class__.__qualname__}({fields})"

    def replace(self, **changes):
        """A copy with ``changes`` (field name: value), as :func:`dataclasses.replace`."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{self.__class__.__qualname__} has no field {sorted(unknown)[0]!r}")
        new = object.__new__(self.__class__)
        for name in self.__slots__:
            object.__setattr__(new, name, changes[name] if name in changes else getattr(self, name))
        return new


class FrozenRecord(Record):
    """A :class:`Record` whose fields cannot change once ``__init__`` has set them (with
    ``object.__setattr__``), hashable by its fields: ``@dataclass(frozen=True)``."""

    __slots__ = ()

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of {self.__class__.__qualname__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {self.__class__.__qualname__}")

    def __hash__(self) -> int:
        return hash(self._values())
