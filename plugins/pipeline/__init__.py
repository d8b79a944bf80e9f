"""The steps every DAG shares, apart from any DAG's wiring.

steps.py     preflight, extract (from a contact source), plan: plain functions of a settings
             snapshot and hooks, returning JSON-safe values
sources.py   where a run's contacts come from (trigger membership for the nightly run)
batch.py     create or link one batch of accounts, safely under retries, clears and kills
finalize.py  final outcomes, activities, history and trigger clean-up
tasks.py     the Airflow side: task decorators, retries, timeouts, XComs; a DAG file wires these
             with its own task ids
"""
