"""kopf glue: handlers, timers and settings. ``kopf run -m thrifty.control`` loads every handler.

Nothing here decides anything: handlers read through ``thrifty.adapters``, call the pure core
(``thrifty.reconcile``, ``thrifty.placement``, ``thrifty.render``) and write back.
"""

from thrifty.control import autoscaler as autoscaler
from thrifty.control import handlers as handlers
