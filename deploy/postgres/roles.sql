-- PostgreSQL roles for orderflow (issue 18): least privilege.
--
--   {{OWNER}}  owns the database and its schema; `orderflow migrate` runs as it
--              (MIGRATION_DATABASE_URL). Nothing else does.
--   {{APP}}    what `orderflow serve` runs as (DATABASE_URL, MIGRATE_ON_START=false): it may read
--              and write rows of the tables the owner makes, and nothing more — no DDL, no
--              DROP, no CREATE in the schema.
--
-- Run once by a superuser: the compose file's first database primary runs it on its first start
-- (deploy/postgres/ha-entrypoint.sh fills in the names; psql reads the passwords from its
-- environment, ORDERFLOW_DB_OWNER_PASSWORD and ORDERFLOW_DB_APP_PASSWORD); the
-- integration test `roles::the_application_role_reads_and_writes_rows_and_nothing_more` runs
-- this same file with psql against the machine's PostgreSQL.
-- The passwords from the environment of psql (never on a command line, never in this file).
\getenv owner_password ORDERFLOW_DB_OWNER_PASSWORD
\getenv app_password ORDERFLOW_DB_APP_PASSWORD
CREATE ROLE "{{OWNER}}" LOGIN PASSWORD :'owner_password';
CREATE ROLE "{{APP}}" LOGIN PASSWORD :'app_password';
-- The database may exist already (pg_autoctl makes it on the compose file's primary): made if
-- missing, given to the owner either way.
SELECT format('CREATE DATABASE %I', '{{DB}}')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{{DB}}') \gexec
ALTER DATABASE "{{DB}}" OWNER TO "{{OWNER}}";
-- Read-only statistics, so that the service can see its synchronous standby at start
-- (pg_stat_replication shows the application nothing without it; DATABASE_SYNC_STANDBY).
GRANT pg_read_all_stats TO "{{APP}}";
\connect "{{DB}}"
ALTER SCHEMA public OWNER TO "{{OWNER}}";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO "{{APP}}";
-- Every table and sequence the owner makes from now on (the migrations) is open to the
-- application for rows only.
ALTER DEFAULT PRIVILEGES FOR ROLE "{{OWNER}}" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{{APP}}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{{OWNER}}" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO "{{APP}}";
