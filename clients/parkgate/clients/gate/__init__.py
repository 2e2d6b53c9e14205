"""The gate controller agent, `parkgate gate run`: scanner and card reader in, relay out, decisions from the servers.

Modules: ``config`` (the TOML file), ``agent`` (the state machine), ``link``
(the Gate.Connect stream), ``inputs`` (device threads), ``turnstile`` (the
relay board), ``offline`` (key cache and offline admissions on disk), ``cli``.
docs/gate-agent.md describes the behaviour and every configuration key.
"""
