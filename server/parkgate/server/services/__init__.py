"""Use cases: one function per thing a person does, each in one transaction.

Servicers in :mod:`parkgate.server.rpc` parse the request and call these; these load
and save through :mod:`parkgate.server.store` and apply the rules of
:mod:`parkgate.server.domain`. Nothing here knows it is behind gRPC.
"""
