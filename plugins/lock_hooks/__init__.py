"""The creation lock's store: PostgreSQL advisory locks (store.py) behind the Airflow connection (hook.py)."""
