"""Scaling policies: pure functions from an observation and carried state to a decision."""
