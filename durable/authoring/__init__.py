"""What workflow code is written against: the workflow decorator, the context and its
steps, wait specs, refs, pipelines, retry policies, signals and the static analysis of
a workflow's source.

Rule: nothing here touches a database or executes a run; it imports only
:mod:`durable.log` (the vocabulary), :mod:`durable.errors` and statewf's pure modules.
"""
