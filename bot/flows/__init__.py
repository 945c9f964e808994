"""Flows as data: their description (spec), loading and validation (loader), and movement (machine)."""
