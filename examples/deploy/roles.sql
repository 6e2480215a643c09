-- Run once, as a PostgreSQL superuser, with the passwords in the environment:
--   HOURCI_ADMIN_PASSWORD=... HOURCI_WRITER_PASSWORD=... sudo -E -u postgres psql -f roles.sql
-- (psql's \getenv reads them; nothing secret is in this file or in the shell history.)
-- Then, as the admin, `hourofci-collector migrate` creates the tables and functions and
-- grants the writer CONNECT and EXECUTE on the five write functions, nothing else.
\set ON_ERROR_STOP on
\getenv admin_password HOURCI_ADMIN_PASSWORD
\getenv writer_password HOURCI_WRITER_PASSWORD
\if :{?admin_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'HOURCI_ADMIN_PASSWORD is not set'; END $$;
\endif
\if :{?writer_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'HOURCI_WRITER_PASSWORD is not set'; END $$;
\endif

SET password_encryption = 'scram-sha-256';
CREATE ROLE hourofciadmin LOGIN PASSWORD :'admin_password';
CREATE ROLE hourofciuser LOGIN PASSWORD :'writer_password';
CREATE DATABASE hourofci OWNER hourofciadmin;
-- By default every role may connect to a new database; only the two roles above should.
REVOKE ALL ON DATABASE hourofci FROM PUBLIC;
GRANT CONNECT ON DATABASE hourofci TO hourofciadmin;
