"""Engines for a cluster without GPUs: a vLLM-compatible simulator, a fleet mirror, load replay."""
