"""Record layouts of the casync format family, declared once.

Every record of a catar stream and of a caibx/caidx index starts with a 16-byte header
(``size``, ``type``; little-endian 64-bit).  The fixed parts of each record are declared
here in :mod:`construct`'s notation; the encoder, the decoder, the index code and spec/ all follow
these declarations.  For the hot paths, :func:`packer` derives a precompiled
:class:`struct.Struct` from the same declaration, so no layout is written twice.

Importing construct costs about 20 ms (it loads pdb for its debugger: python3 -X importtime,
benchmarks/startup.py), a quarter of the start-up budget of ``pycatar list``, while the code needs only
sizes and packers.  So the names of the notation (:data:`Int64ul`, :class:`Bytes`, :class:`Const`,
:class:`Struct`) are this module's: each records its part of a layout, and the construct object is
made from the same declaration when first asked for — ``Entry.to_construct()``, or any construct
attribute such as ``Entry.parse(data)`` (the ``# start-up:`` import in :meth:`_Layout.to_construct`).
"""

from __future__ import annotations

import struct

# --------------------------------------------------------------------------- the notation


class _Layout:
    """A part of a record layout, in construct's notation; ``"name" / part`` names a field."""

    code = ""  #: the :mod:`struct` format of the part

    def sizeof(self) -> int:
        return struct.calcsize("<" + self.code)

    def __rtruediv__(self, name: str) -> _Field:
        return _Field(name, self)

    def _make(self, construct):
        raise NotImplementedError

    def to_construct(self):
        """The :mod:`construct` object of this declaration (made once, on first use)."""
        made = self.__dict__.get("_construct")
        if made is None:
            import construct  # start-up: 20 ms that only parse/build through construct need (see top)

            made = self.__dict__["_construct"] = self._make(construct)
        return made

    def __getattr__(self, attr: str):  # parse, build, subcons...: construct's own
        if attr.startswith("__") or attr == "_construct":
            raise AttributeError(attr)
        return getattr(self.to_construct(), attr)


class _Field:
    """``"name" / part``: a named field of a :class:`Struct`."""

    def __init__(self, name: str, subcon: _Layout):
        self.name, self.subcon = name, subcon


class _Int64ul(_Layout):
    code = "Q"

    def _make(self, construct):
        return construct.Int64ul


#: an unsigned 64-bit little-endian integer
Int64ul = _Int64ul()


class Bytes(_Layout):
    """``length`` bytes."""

    def __init__(self, length: int):
        self.length = length
        self.code = f"{length}s"

    def _make(self, construct):
        return construct.Bytes(self.length)


class Const(_Layout):
    """A field that always holds ``value`` (an integer of ``subcon``)."""

    def __init__(self, value: int, subcon: _Layout):
        self.value, self.subcon = value, subcon
        self.code = subcon.code

    def _make(self, construct):
        return construct.Const(self.value, self.subcon.to_construct())


class Struct(_Layout):
    """Named fields in order, without padding (a nested Struct's fields are flattened in its place)."""

    def __init__(self, *fields: _Field):
        self.fields = fields
        self.code = "".join(f.subcon.code for f in fields)

    def _make(self, construct):
        return construct.Struct(*(f.name / f.subcon.to_construct() for f in self.fields))

# --------------------------------------------------------------------------- type ids


class RecordType:
    """The 22 type constants of the format family (spec: CONST-1), as plain ints (an enum.IntEnum
    loaded enum, 2-3 ms of every command's start-up; :data:`RECORD_TYPES` names them)."""

    ENTRY = 0x1396FABCEA5BBB51
    USER = 0xF453131AAEEACCB3
    GROUP = 0x25EB6AC969396A52
    XATTR = 0xB8157091F80BC486
    ACL_USER = 0x297DC88B2EF12FAF
    ACL_GROUP = 0x36F2ACB56CB3DD0B
    ACL_GROUP_OBJ = 0x23047110441F38F3
    ACL_DEFAULT = 0xFE3EEDA6823C8CD0
    ACL_DEFAULT_USER = 0xBDF03DF9BD010A91
    ACL_DEFAULT_GROUP = 0xA0CB1168782D1F51
    FCAPS = 0xF7267DB0AFED0629
    QUOTA_PROJID = 0x161BAF2D8772A72B
    SELINUX = 0x46FAF0602FD26C59
    SYMLINK = 0x664A6FB6830E0D6C
    DEVICE = 0xAC3DACE369DFE643
    PAYLOAD = 0x8B9E1D93D6DCFFC9
    FILENAME = 0x6DBB6EBCB3161F0B
    GOODBYE = 0xDFD35C5E8327C403
    GOODBYE_TAIL_MARKER = 0x57446FA533702943
    INDEX = 0x96824D9C7B129FF9
    TABLE = 0xE75B9E112F17417D
    TABLE_TAIL_MARKER = 0x4B4F050E5549ECD1


#: every type constant by name, in the order of :class:`RecordType`
RECORD_TYPES: dict[str, int] = {name: value for name, value in vars(RecordType).items() if name.isupper()}


#: Human-readable record names, as casync prints them.
TYPE_NAMES = {
    RecordType.ENTRY: "entry",
    RecordType.USER: "user",
    RecordType.GROUP: "group",
    RecordType.XATTR: "xattr",
    RecordType.FCAPS: "fcaps",
    RecordType.QUOTA_PROJID: "quota-projid",
    RecordType.ACL_USER: "acl-user",
    RecordType.ACL_GROUP: "acl-group",
    RecordType.ACL_GROUP_OBJ: "acl-group-obj",
    RecordType.ACL_DEFAULT: "acl-default",
    RecordType.ACL_DEFAULT_USER: "acl-default-user",
    RecordType.ACL_DEFAULT_GROUP: "acl-default-group",
    RecordType.SELINUX: "selinux",
    RecordType.SYMLINK: "symlink",
    RecordType.DEVICE: "device",
    RecordType.PAYLOAD: "payload",
    RecordType.FILENAME: "filename",
    RecordType.GOODBYE: "goodbye",
    RecordType.INDEX: "index",
    RecordType.TABLE: "table",
}

# --------------------------------------------------------------------------- catar records

Header = Struct("size" / Int64ul, "type" / Int64ul)
HEADER_SIZE = Header.sizeof()  # 16

#: ENTRY: general stat() data. mtime is in nanoseconds since the epoch.
Entry = Struct(
    "header" / Header,
    "feature_flags" / Int64ul,
    "mode" / Int64ul,
    "flags" / Int64ul,
    "uid" / Int64ul,
    "gid" / Int64ul,
    "mtime" / Int64ul,
)
ENTRY_SIZE = Entry.sizeof()  # 64

#: ACL_USER / ACL_DEFAULT_USER: fixed part, followed by an optional NUL-terminated user name.
ACLUser = Struct("header" / Header, "uid" / Int64ul, "permissions" / Int64ul)
#: ACL_GROUP / ACL_DEFAULT_GROUP: fixed part, followed by an optional NUL-terminated group name.
ACLGroup = Struct("header" / Header, "gid" / Int64ul, "permissions" / Int64ul)
ACL_ENTRY_FIXED_SIZE = ACLUser.sizeof()  # 32

ACLGroupObj = Struct("header" / Header, "permissions" / Int64ul)
ACLDefault = Struct(
    "header" / Header,
    "user_obj_permissions" / Int64ul,
    "group_obj_permissions" / Int64ul,
    "other_permissions" / Int64ul,
    "mask_permissions" / Int64ul,
)
QuotaProjID = Struct("header" / Header, "projid" / Int64ul)
Device = Struct("header" / Header, "major" / Int64ul, "minor" / Int64ul)

GoodbyeItem = Struct("offset" / Int64ul, "size" / Int64ul, "hash" / Int64ul)
GoodbyeTail = Struct(
    "entry_offset" / Int64ul,
    "size" / Int64ul,
    "marker" / Const(RecordType.GOODBYE_TAIL_MARKER, Int64ul),
)
GOODBYE_ITEM_SIZE = GoodbyeItem.sizeof()  # 24

ACL_PERMISSION_READ = 4
ACL_PERMISSION_WRITE = 2
ACL_PERMISSION_EXECUTE = 1
#: "not set" value of an ACL_DEFAULT permission field
ACL_PERMISSION_UNSET = 0xFFFFFFFFFFFFFFFF

#: SipHash-2-4 key of the goodbye table hashes.
GOODBYE_HASH_KEY = bytes(
    [0xB3, 0x84, 0x1D, 0x0F, 0x2B, 0x44, 0x74, 0x85, 0xC1, 0x2E, 0xC2, 0xD1, 0x30, 0xED, 0x36, 0x27]
)

# Size limits of variable-length records (whole record, header included).
USER_SIZE_MAX = HEADER_SIZE + 256
GROUP_SIZE_MAX = HEADER_SIZE + 256
XATTR_SIZE_MAX = HEADER_SIZE + 255 + 1 + 64 * 1024
FCAPS_SIZE_MAX = HEADER_SIZE + 64 * 1024
ACL_USER_SIZE_MAX = ACL_ENTRY_FIXED_SIZE + 256
ACL_GROUP_SIZE_MAX = ACL_ENTRY_FIXED_SIZE + 256
SELINUX_SIZE_MAX = HEADER_SIZE + 4096
SYMLINK_SIZE_MAX = HEADER_SIZE + 4096
FILENAME_SIZE_MAX = HEADER_SIZE + 256

# --------------------------------------------------------------------------- index records

CHUNK_ID_SIZE = 32

#: INDEX: the header of a caibx/caidx file.
Index = Struct(
    "header" / Header,
    "feature_flags" / Int64ul,
    "chunk_size_min" / Int64ul,
    "chunk_size_avg" / Int64ul,
    "chunk_size_max" / Int64ul,
)
INDEX_SIZE = Index.sizeof()  # 48

#: The TABLE header's size field is UINT64_MAX, so that the table can be written incrementally.
TABLE_HEADER_SIZE_FIELD = 0xFFFFFFFFFFFFFFFF

#: One TABLE item: the end offset of the chunk in the stream and the chunk id.
TableItem = Struct("offset" / Int64ul, "chunk" / Bytes(CHUNK_ID_SIZE))
TABLE_ITEM_SIZE = TableItem.sizeof()  # 40

TableTail = Struct(
    "zero_fill1" / Const(0, Int64ul),
    "zero_fill2" / Const(0, Int64ul),
    "index_offset" / Int64ul,
    "size" / Int64ul,
    "marker" / Const(RecordType.TABLE_TAIL_MARKER, Int64ul),
)

# --------------------------------------------------------------------------- fast packers


def packer(con: _Layout) -> struct.Struct:
    """A :class:`struct.Struct` with the same layout as the declaration ``con``.

    Fields are flattened in declaration order (a nested header becomes size, type)."""
    return struct.Struct("<" + con.code)


def offsets(con: Struct) -> dict[str, int]:
    """The byte offset of each named field of the declaration ``con`` (a nested struct's fields by
    their own names, as :func:`packer` flattens them), for code that reads the records in place."""
    out: dict[str, int] = {}
    pos = 0
    for f in con.fields:
        if isinstance(f.subcon, Struct):
            out.update((name, pos + o) for name, o in offsets(f.subcon).items())
        else:
            out[f.name] = pos
        pos += f.subcon.sizeof()
    return out


HEADER = packer(Header)
ENTRY = packer(Entry)
ACL_USER = packer(ACLUser)
ACL_GROUP = packer(ACLGroup)
ACL_GROUP_OBJ = packer(ACLGroupObj)
ACL_DEFAULT = packer(ACLDefault)
QUOTA_PROJID = packer(QuotaProjID)
DEVICE = packer(Device)
GOODBYE_ITEM = packer(GoodbyeItem)
GOODBYE_TAIL = packer(GoodbyeTail)
INDEX = packer(Index)
TABLE_ITEM = packer(TableItem)
TABLE_TAIL = packer(TableTail)
U64 = struct.Struct("<Q")
