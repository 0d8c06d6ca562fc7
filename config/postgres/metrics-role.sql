-- The metrics overlay's database role (docker-compose-metrics.yaml, job metrics_db_role),
-- run as the superuser at every start: made when missing, its password set again (a new
-- SECRET_KEY gives a new one), and only pg_monitor granted: it reads the server's
-- statistics, never MediaCMS's tables. Name and password come from the environment.
\getenv role METRICS_DB_USER
\getenv password METRICS_DB_PASSWORD
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') AS missing \gset
\if :missing
CREATE ROLE :"role";
\endif
ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
GRANT pg_monitor TO :"role";
