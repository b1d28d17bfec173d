"""Executing runs in this process: the executor of many runs (tasks, leases,
scheduler), the executor of one run (replaying its log and running its steps), its
writer (the only other code that appends to a run's log, fenced by the lease), waits,
outcomes, the workflow registry and waiting on the engine's clock.

Rule: runs workflow code and writes only through the claimed lease of the run; imports
:mod:`durable.authoring`, :mod:`durable.control`, :mod:`durable.log`,
:mod:`durable.observe` and :mod:`durable.errors`, never a face (client, engine, worker).
"""
