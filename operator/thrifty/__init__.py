"""thrifty: serve open-weight LLMs on GPUs at the lowest cost that meets their latency targets."""

__version__ = "0.1.0"
