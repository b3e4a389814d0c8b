"""The exceptions of pycatar.  The CLI turns every :class:`PycatarError` into a one-line message."""


class PycatarError(Exception):
    """Base class of all errors pycatar reports to its user."""


class FormatError(PycatarError):
    """A malformed archive, index or chunk: the input breaks a MUST of spec/."""


class UsageError(PycatarError):
    """A bad argument or option."""


class ChunkError(PycatarError):
    """A chunk is missing, corrupt or does not match its id."""


class ChunkMissing(ChunkError):
    """No store (nor seed) has the chunk."""


class UnsupportedError(PycatarError):
    """The input needs something the chosen feature flags (or this machine) cannot provide."""


class StoreUnavailable(ChunkError):
    """A chunk store could not be reached (or kept failing): a failover group tries the next member."""
