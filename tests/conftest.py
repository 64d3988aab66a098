"""Settings every unit test shares.

Hypothesis' default 200 ms deadline per example is a timing assertion, and timings vary with the
machine's load (a busy CI machine ran a 1 ms example in 588 ms): tests assert behaviour here, so
no example has a deadline.
"""

from hypothesis import settings

settings.register_profile("thrifty", deadline=None)
settings.load_profile("thrifty")
