"""The transactions that change a run from outside its execution: start, operator
actions and events, repair (retry, discard, fork) and the claim of runs by workers.

Rule: every transaction on runs outside a run's own execution is opened here, as
load (and lock) → decide (pure, with :mod:`durable.log`) → write with
:func:`statewf.appending.append`. No workflow code runs here and nothing here is
asynchronous; imports :mod:`durable.log` and :mod:`durable.errors` only.
"""
