"""Clients that speak only the contract: gate agent, window client, admin CLI."""
