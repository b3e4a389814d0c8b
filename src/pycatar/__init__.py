"""pycatar: casync-compatible catar archives, chunk indexes and chunk stores."""

__version__ = "0.1.0"
