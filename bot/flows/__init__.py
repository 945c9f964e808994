"""Flows as data: their shape (spec), loading and validation (loader), movement (machine)."""
