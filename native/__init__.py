"""Ticket-code core: decoding, Ed25519 verification and rule checks (native + pure Python)."""
