"""The parkgate version: one number for every package of one release (gates report it in their hello)."""

__version__ = "0.2.0"
