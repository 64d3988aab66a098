"""The reconciler's pure core: what one ModelService's workloads and status should be.

`placement` chooses the pool (its free GPUs counted from nodes and pods), `render` turns the spec
into the Deployment, Service and PodDisruptionBudget, `reconcile` plans a whole pass (manifests,
status, conditions, Events) and the CostBudgets' status. `thrifty.control.handlers` reads the
watch caches, calls `reconcile.plan` and applies what it returns.
"""
