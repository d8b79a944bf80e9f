"""`make demo`: the nightly DAG once, against the sandbox CiviCRM and CMS, then its outcomes.

The CMS is the emulator named by $CMS (`CMS=joomla make demo`), else the settings' `cms_type`
(WordPress when the settings leave it empty); the CMS connection is of that type, so it decides.
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

    from cms_operators import registry
    from provisioning import report
    from provisioning.settings import load_settings
    from sandbox.sites import DEFAULT_CMS_TYPE, started_sites

    cms_type = os.environ.get("CMS", "").strip().lower() or load_settings().cms_type or DEFAULT_CMS_TYPE
    label = registry.get(cms_type).label
    started = time.monotonic()
    with started_sites(cms_type=cms_type) as sites:
        civicrm, cms = sites.civicrm, sites.cms
        os.environ.update(sites.connection_env)
        print(f"sandbox CiviCRM at {civicrm.url}, {label} at {cms.url}", flush=True)
        local_airflow.init_db()
        run = local_airflow.run_nightly()
        outcomes = local_airflow.xcom(run.run_id, "finalize", key="outcomes") or []
        resets = local_airflow.xcom(run.run_id, "password_resets", key="resets") or []
        print()
        print(f"Run {run.run_id}: {run.state}")
        if outcomes:
            frame = pd.DataFrame(outcomes)
            print(report.outcome_table(frame, max_rows=len(frame)))
            print(report.summary_table(frame))
        if resets:
            print("\nPassword resets:")
            print(report.outcome_table(pd.DataFrame(resets, dtype=object), max_rows=len(resets),
                                       columns=("contact_id", "outcome", "uf_id", "reason")))
        print(f"{len(civicrm.calls)} CiviCRM calls, {len(cms.calls)} {label} calls, "
              f"{len(cms.mails)} password mails, {time.monotonic() - started:.1f} s")
        return 0 if str(run.state) in ("success", "DagRunState.SUCCESS") and outcomes else 1


if __name__ == "__main__":
    sys.exit(main())
