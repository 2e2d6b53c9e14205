"""parkgate: ticketing and gate access control. See README.md and docs/architecture.md."""

__version__ = "0.1.0"
