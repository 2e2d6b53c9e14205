"""parkgate test suite."""
