"""Thin servicers: parse the request, call a service, build the response."""
