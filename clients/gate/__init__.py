"""The gate controller agent, `parkgate gate run`: scanner and card reader in, relay out, decisions from the servers."""
