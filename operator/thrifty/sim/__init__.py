"""The fleet simulator: engine model, traces, virtual fleet and runner.

Pure and deterministic: it reads no clock and talks to no cluster, so a policy can be replayed
against real traffic on a laptop and give the same numbers every time.
"""
