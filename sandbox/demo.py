"""`make demo`: the nightly DAG once, against the sandbox CiviCRM and WordPress, then its outcomes.

The emulators are seeded from sandbox/demo_seed.yaml (one contact per situation the pipeline
handles) and get fresh random credentials, exactly as a site's connections would hold them.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

from sandbox import local_airflow

DEMO_SEED = Path(__file__).with_name("demo_seed.yaml")


def main() -> int:
    local_airflow.configure(local_airflow.REPO / ".airflow" / "demo")
    (local_airflow.REPO / ".airflow" / "demo" / "airflow.db").unlink(missing_ok=True)  # a fresh run each time

    import pandas as pd
    import yaml

    from provisioning import report
    from sandbox.civicrm import CiviCRMEmulator
    from sandbox.wordpress import WordPressEmulator

    seed = yaml.safe_load(DEMO_SEED.read_text())
    api_key, site_key, app_password = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(12)
    started = time.monotonic()
    with CiviCRMEmulator(api_key=api_key, site_key=site_key) as civicrm, \
            WordPressEmulator(login="admin", app_password=app_password) as wordpress:
        civicrm.seed(seed["civicrm"])
        wordpress.seed(seed["wordpress"])
        civicrm.start()
        wordpress.start()
        os.environ.update(local_airflow.connection_env(civicrm.url, api_key, site_key, wordpress.url, "admin",
                                                       app_password))
        print(f"sandbox CiviCRM at {civicrm.url}, WordPress at {wordpress.url}", flush=True)
        local_airflow.init_db()
        run = local_airflow.run_nightly()
        outcomes = local_airflow.xcom(run.run_id, "finalize", key="outcomes") or []
        print()
        print(f"Run {run.run_id}: {run.state}")
        if outcomes:
            frame = pd.DataFrame(outcomes)
            print(report.outcome_table(frame, max_rows=len(frame)))
            print(report.summary_table(frame))
        print(f"{len(civicrm.calls)} CiviCRM calls, {len(wordpress.calls)} WordPress calls, "
              f"{len(wordpress.mails)} password mails, {time.monotonic() - started:.1f} s")
        return 0 if str(run.state) in ("success", "DagRunState.SUCCESS") and outcomes else 1


if __name__ == "__main__":
    sys.exit(main())
