"""`make demo`: the nightly DAG once, against the sandbox CiviCRM and WordPress, then its outcomes.

The emulators are seeded from sandbox/demo_seed.yaml (one contact per situation the pipeline
handles) and get fresh random credentials, exactly as a site's connections would hold them.
"""

from __future__ import annotations

import os
import sys
import time

from sandbox import local_airflow


def main() -> int:
    local_airflow.configure(local_airflow.REPO / ".airflow" / "demo", fresh=True)  # a fresh run each time

    import pandas as pd

    from provisioning import report
    from sandbox.sites import started_sites

    started = time.monotonic()
    with started_sites() as sites:
        civicrm, wordpress = sites.civicrm, sites.wordpress
        os.environ.update(sites.connection_env)
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
