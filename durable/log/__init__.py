"""The pure vocabulary of a run's log: row kinds and statuses, public records, the
step plan, the codec of stored values, replay of a log into history, the rows a run
starts with, and the views (run, progress, timeline) read from a snapshot and its log.

Rule: pure functions and data only: no database, no clock, no asyncio; imports only
:mod:`durable.errors` and statewf's records, fold and errors.
"""
