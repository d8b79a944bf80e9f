# The cmsuser pipeline on Airflow's official image. The tag must match the apache-airflow pin in
# requirements.txt and the Python of pyproject.toml (tests/stack checks both).
FROM apache/airflow:3.3.2-python3.11

# Airflow's constraints for exactly this Airflow and Python: extra packages are installed at the
# versions Airflow was released and tested with, never upgrading what the image already has.
ARG AIRFLOW_CONSTRAINTS_URL="https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.11.txt"

USER airflow

# The image's default extras already include http, fab, celery, postgres and pandas; install a
# provider only if this image lacks it (a slimmer base image, a changed default), so nothing the
# image ships is replaced. `apache-airflow==3.3.2` on the same line keeps pip from moving Airflow.
RUN missing=""; \
    for pair in \
        airflow.providers.http=apache-airflow-providers-http \
        airflow.providers.fab=apache-airflow-providers-fab \
        airflow.providers.celery=apache-airflow-providers-celery \
        airflow.providers.postgres=apache-airflow-providers-postgres; do \
      python -c "import ${pair%%=*}" 2>/dev/null || missing="${missing} ${pair#*=}"; \
    done; \
    if [ -n "${missing}" ]; then \
      echo "installing what the image lacks:${missing}"; \
      pip install --no-cache-dir "apache-airflow==3.3.2" ${missing} --constraint "${AIRFLOW_CONSTRAINTS_URL}"; \
    else \
      echo "the image already has every provider this project needs"; \
    fi

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root config/ /opt/airflow/config/
COPY --chown=airflow:root sandbox/ /opt/airflow/sandbox/
COPY --chown=airflow:root pyproject.toml /opt/airflow/pyproject.toml

WORKDIR /opt/airflow
ENV CMSUSER_SETTINGS=/opt/airflow/config/cmsuser.yaml

# The project as an Airflow provider (`cmsuser-airflow`): its entry point gives the UI the connection
# types civicrm and wordpress, with their forms and Test button. Editable, so the installed package points
# at /opt/airflow/plugins: the code exists once, and a bind mount of ./plugins (docker-compose.yaml) is
# what runs. Its dependencies are already in the image; the constraints keep pip from moving anything.
RUN pip install --no-cache-dir "apache-airflow==3.3.2" --editable /opt/airflow --constraint "${AIRFLOW_CONSTRAINTS_URL}"

# Our modules' bytecode, written once here: pip compiles what it installs, but the editable install leaves
# plugins/ and dags/ as source, and every task process would compile each module it imports (about 60 ms of
# CPU a task) wherever Python may not write its own cache. (A bind mount of ./plugins replaces these files.)
RUN python -m compileall -q /opt/airflow/plugins /opt/airflow/dags

# Fail the build, not the first night's run, when the code does not import in this image.
RUN PYTHONPATH=/opt/airflow/plugins python -c "import provisioning, civicrm_hooks, cms_operators" \
    && python -c "import sandbox"
# ... and when Airflow does not list our connection types (provider not installed, or a hook that does
# not import), with no PYTHONPATH: as the api-server, scheduler and workers will find them.
RUN python -c "from airflow.providers_manager import ProvidersManager as P; from airflow.sdk.module_loading import import_string; types = {t['connection-type']: import_string(t['hook-class-name']) for t in P().providers['cmsuser-airflow'].data['connection-types']}; assert {'civicrm', 'wordpress'} <= set(types), types; print('provider cmsuser-airflow:', sorted(types))"
