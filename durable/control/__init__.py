"""The transactions that change a run from outside its execution: start, operator
actions and events, repair (retry, discard, fork) and the claim of runs by workers.

Rule: each public function here is one transaction on the store: load (and lock) →
decide with :mod:`durable.log` → append with :func:`statewf.appending.append`. No
workflow code runs here and nothing here is asynchronous; imports :mod:`durable.log`
and :mod:`durable.errors` only.
"""
