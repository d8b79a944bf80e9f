"""Pure decision logic for CMS account provisioning: settings, usernames, plan, outcomes, report.

No Airflow imports and no I/O here (apart from load_settings reading the settings file).
"""
