"""parkgate's gRPC server: ``rpc`` (thin servicers, interceptors) → ``services`` (use cases) → ``domain`` (rules)
and ``store`` (SQL). See docs/architecture.md."""
