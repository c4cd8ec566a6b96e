"""Persistence: SQLModel tables, the engine, and data access functions."""
