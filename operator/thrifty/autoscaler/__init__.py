"""The autoscaler's pure core: what one pass over the whole fleet decides, without I/O.

`observe` translates a ModelService and what the cluster says about it into the policy's
`Observation` (the one translation, shared by the operator, `thrifty simulate` and the benchmark);
`plan` runs the policies over the whole fleet at once (budgets shared across their members in one
place) and returns per ModelService the decision, the scale target, the status and the Event;
`status` says what a pass means for a ModelService's status. `thrifty.control` reads the world
and executes the plan; `thrifty.sim` drives the same plan from a virtual fleet.
"""
