"""format.py declares each record layout once, in construct's notation, without importing construct
(start-up).  construct itself is the oracle here: the object it makes from each declaration has the
size, field order and bytes of the struct packer the code uses."""

from __future__ import annotations

import subprocess
import sys

import construct
import pytest

from pycatar import format as fmt

LAYOUTS = {name: getattr(fmt, name) for name in ("Header", "Entry", "ACLUser", "ACLGroup", "ACLGroupObj",
                                                 "ACLDefault", "QuotaProjID", "Device", "GoodbyeItem",
                                                 "GoodbyeTail", "Index", "TableItem", "TableTail")}
#: published sizes (casync's caformat.h / caindex.c)
SIZES = {"Header": 16, "Entry": 64, "ACLUser": 32, "ACLGroup": 32, "ACLGroupObj": 24, "ACLDefault": 48,
         "QuotaProjID": 24, "Device": 32, "GoodbyeItem": 24, "GoodbyeTail": 24, "Index": 48, "TableItem": 40,
         "TableTail": 40}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_packer_agrees_with_construct(name):
    layout = LAYOUTS[name]
    con = layout.to_construct()
    assert isinstance(con, construct.Struct)
    pk = fmt.packer(layout)
    assert layout.sizeof() == con.sizeof() == pk.size == SIZES[name]
    # distinct values per field, in declaration order; Const fields take their constant
    values, i = [], 0
    for code in pk.format.lstrip("<").replace("32s", "B"):
        values.append(bytes(range(i, i + 32)) if code == "B" else 0x0102030405060708 * (i + 1))
        i += 1
    flat = [f for f in _flat(con)]
    for k, (fname, sub) in enumerate(flat):
        if isinstance(sub, construct.Const):
            values[k] = sub.value
    data = pk.pack(*values)
    parsed = con.parse(data)
    assert [_get(parsed, path) for path, _ in flat] == values
    assert con.build(parsed) == data


def _flat(con, prefix=()):
    for sub in con.subcons:
        inner = sub.subcon if isinstance(sub, construct.Renamed) else sub
        if isinstance(inner, construct.Struct):
            yield from _flat(inner, prefix + (sub.name,))
        else:
            yield prefix + (sub.name,), inner


def _get(parsed, path):
    for p in path:
        parsed = parsed[p]
    return parsed


def test_construct_attributes_reach_the_construct_object():
    data = fmt.HEADER.pack(64, fmt.RecordType.ENTRY)
    assert fmt.Header.parse(data).size == 64
    assert fmt.Header.build(dict(size=16, type=1)) == fmt.HEADER.pack(16, 1)
    with pytest.raises(construct.ConstError):
        fmt.GoodbyeTail.parse(fmt.GOODBYE_TAIL.pack(1, 2, 3))


def test_importing_the_format_does_not_import_construct():
    code = "import sys, pycatar.format, pycatar.decoder, pycatar.index; print('construct' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
