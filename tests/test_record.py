"""pycatar.record: the plain slotted classes behave as the dataclasses they replace (the oracle:
the standard library's dataclasses, built here with the same fields)."""

from __future__ import annotations

import dataclasses

import pytest

from pycatar.archive import MakeResult
from pycatar.encoder import EncoderOptions
from pycatar.entry import ACLEntry, Entry
from pycatar.exclude import Rule
from pycatar.extract import ExtractStats
from pycatar.index import ChunkRef, IndexHeader
from pycatar.listing import View


def _twin(cls, frozen: bool = False):
    """The dataclass with ``cls``'s fields, in order, with the defaults ``cls.__init__`` gives."""
    probe = cls.__new__(cls)
    required = cls.__init__.__code__.co_argcount - 1 - len(cls.__init__.__defaults__ or ())
    args = [f"a{i}" for i in range(required)]
    cls.__init__(probe, *args)
    fields = []
    for i, name in enumerate(cls.__slots__):
        value = getattr(probe, name)
        if i < required:
            fields.append((name, object))
        elif isinstance(value, (list, dict)):
            fields.append((name, object, dataclasses.field(default_factory=type(value))))
        else:
            fields.append((name, object, dataclasses.field(default=value)))
    return dataclasses.make_dataclass(cls.__name__, fields, slots=True, frozen=frozen)


@pytest.mark.parametrize("cls, args, frozen", [
    (Entry, ("d/f", 0o100644), False),
    (ACLEntry, (5, 7), False),
    (View, ("x", 0o40755), False),
    (ExtractStats, (), False),
    (ChunkRef, (3, 10, 20, b"\x01" * 32), True),
    (IndexHeader, (0x1234, 16384, 65536, 262144), True),
    (EncoderOptions, (0x1234,), False),
    (MakeResult, ("ab", 10, 3, 1), False),
    (Rule, (1, b"*.o", False, True), False),
])
def test_records_behave_as_their_dataclasses(cls, args, frozen):
    twin = _twin(cls, frozen)
    a, b, t = cls(*args), cls(*args), twin(*args)
    assert repr(a) == repr(t)  # every field, in order, named
    assert a == b and not (a != b)
    assert a != t  # another class is never equal, as with dataclasses
    changed = cls.__slots__[0]
    c = a.replace(**{changed: "other"})
    assert c != a and getattr(c, changed) == "other"
    assert repr(c) == repr(dataclasses.replace(t, **{changed: "other"}))
    for name in cls.__slots__:  # equality looks at every field
        assert a.replace(**{name: "other"}) != a
    with pytest.raises(TypeError):
        a.replace(no_such_field=1)
    if frozen:
        assert hash(a) == hash(b) and {a: 1}[b] == 1
        with pytest.raises(AttributeError):
            setattr(a, changed, 0)
        with pytest.raises(dataclasses.FrozenInstanceError):  # the twin refuses the same
            setattr(t, changed, 0)
    else:
        with pytest.raises(TypeError):
            hash(a)
        with pytest.raises(TypeError):
            hash(t)
        setattr(a, changed, "set")
        assert getattr(a, changed) == "set"
    with pytest.raises(AttributeError):  # slotted: no other attribute
        a.not_a_field = 1


def test_each_entry_has_lists_of_its_own():
    a, b = Entry("a", 0o100644), Entry("b", 0o100644)
    a.xattrs.append((b"user.x", b"1"))
    assert b.xattrs == [] and a.acl_user is not b.acl_user
    r, q = Rule(1, b"a", False, False), Rule(1, b"b", False, False)
    r.children.append(q)
    assert q.children == []


def test_encoder_options_refuse_an_unknown_option():
    with pytest.raises(TypeError):
        EncoderOptions(0, no_such_option=1)
