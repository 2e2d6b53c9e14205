"""Typed rows: what the store's queries return, one frozen dataclass per shape of row.

Each dataclass's fields are named after the columns of the query that fills
it (the store builds them with psycopg's ``class_row``), so a column renamed
in SQL fails loudly at the one place that reads it. Nothing here imports
psycopg: the services and the rpc layer use these types freely.
"""
