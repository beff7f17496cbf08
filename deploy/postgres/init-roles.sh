#!/bin/sh
# First start of the compose file's PostgreSQL (/docker-entrypoint-initdb.d): the owner and
# application roles of deploy/postgres/roles.sql, with the passwords from the environment.
set -eu
: "${ORDERFLOW_DB_OWNER_PASSWORD:?}" "${ORDERFLOW_DB_APP_PASSWORD:?}"
sed -e "s/{{OWNER}}/orderflow_owner/g" -e "s/{{APP}}/orderflow_app/g" -e "s/{{DB}}/orderflow/g" \
    -e "s/{{OWNER_PASSWORD}}/${ORDERFLOW_DB_OWNER_PASSWORD}/g" \
    -e "s/{{APP_PASSWORD}}/${ORDERFLOW_DB_APP_PASSWORD}/g" \
    /orderflow/roles.sql | psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres
