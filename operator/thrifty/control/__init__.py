"""kopf glue: watch caches, handlers, the leader-only loops and settings.

``python -m thrifty.control`` (or ``kopf run -m thrifty.control``) loads every handler. Nothing here
decides anything: the loops and handlers read through ``thrifty.adapters`` and kopf's caches, call
the pure core (``thrifty.autoscaler``, ``thrifty.reconciler``) and write back what it returns.
"""

from thrifty.control import caches as caches
from thrifty.control import handlers as handlers
from thrifty.control import lifecycle as lifecycle
