"""The rules of the park, as plain Python.

Nothing here knows about the wire (grpc) or the database (psycopg): services
load data through the store, hand it to these functions, and the rpc layer
turns the exceptions raised here into gRPC statuses. That keeps every rule in
one place and testable without a server.
"""
