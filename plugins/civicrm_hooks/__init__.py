"""CiviCRM side of the pipeline: the APIv4 hook (hook.py) and the queries the tasks run (queries.py)."""
