"""Billing: limits, reservations, the ledger and its daily rollup, entered through the metered call.

Every upstream call is a `MeteredCall` (metered.py): it reserves the call's
worst case before the call, keeps its prices, timing and usage, and settles
exactly once. `budget.py` holds the reserve and settle steps it is made of
(their statements written out in `ledger_sql.py`), `prompt_bound.py` the
prompt's upper bound, `processes.py` the heartbeats that tell a live server
process from a dead one, and `sweep.py` what becomes of the calls of a
process that died.
"""
