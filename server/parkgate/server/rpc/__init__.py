"""The gRPC edge: thin servicers and the interceptors every call passes through.

Order of the interceptors, outermost first (see :func:`interceptor_chain`)::

    RequestLog      one JSON line per call: method, peer, user, outcome, ms
    ErrorMapping    domain errors -> gRPC status + "parkgate-reason"; bad bytes -> TRUNCATED_MESSAGE
    Authentication  session token -> Principal (or device calls, checked by the servicer)
    Permission      the contract's (access).permission, checked against the Principal
    Audit           mutating calls -> operation log, with their outcome
    servicer        parses, calls a service, builds the response
"""
