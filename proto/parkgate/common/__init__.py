"""What every parkgate package shares: the version, the one Reason type, logging and the ``parkgate`` command.

This distribution (``parkgate-contract``, folder ``proto/``) is the bottom of
the stack: the protobuf contract (``parkgate.v1``, generated at build time)
and these few modules. Servers, clients, the native core and the HA tools all
depend on it and on nothing of each other's that they do not need.
"""

from .version import __version__

__all__ = ["__version__"]
