-- cxr-triage: the roles of a department's decision store on PostgreSQL.
--
-- Run as a superuser (psql -v ON_ERROR_STOP=1 -f roles.sql), once per server, in two steps:
--   1. the part before "-- after store init" (owner, database, readers' group);
--   2. `cxr-triage store init --db postgres://cxr_triage_owner@HOST/cxr_triage` (creates the
--      tables, triggers and functions, owned by cxr_triage_owner);
--   3. the part after it, connected to the cxr_triage database (the readers' grants).
-- After upgrading cxr-triage, the owner runs `store init` again (it brings the tables up to date)
-- and then this file's grants again (they may name new tables).
-- Then one login role per reader, in the readers' group (see the end). The decision log records
-- each decision under the reader's database user (session_user): a reader cannot record as
-- someone else, and no reader can change or delete an event (no UPDATE, DELETE or TRUNCATE is
-- granted, and the log's triggers refuse them even to its owner).
-- Replace the passwords, or use the server's own authentication (pg_hba.conf: scram-sha-256,
-- Kerberos/GSSAPI, certificates) instead.

CREATE ROLE cxr_triage_owner LOGIN PASSWORD 'change-me-owner';
CREATE DATABASE cxr_triage OWNER cxr_triage_owner;
CREATE ROLE cxr_triage_readers NOLOGIN;

-- after store init: \connect cxr_triage
GRANT CONNECT ON DATABASE cxr_triage TO cxr_triage_readers;
GRANT USAGE ON SCHEMA public TO cxr_triage_readers;
-- The decision log: read and append, nothing else.
GRANT SELECT, INSERT ON decisions TO cxr_triage_readers;
-- The study index (a cache refreshed when a folder is opened) and claims (who has a study open).
GRANT SELECT, INSERT, UPDATE ON studies TO cxr_triage_readers;
GRANT SELECT, INSERT, UPDATE, DELETE ON claims TO cxr_triage_readers;
-- The names windows give the decisions they send (a retried decision is recorded once), and the
-- scores each model gave each study (a cache written by `score --db`).
GRANT SELECT, INSERT ON decision_requests TO cxr_triage_readers;
GRANT SELECT, INSERT, UPDATE ON scores TO cxr_triage_readers;
-- Read-only: the schema version, and the highest event number ever appended (kept by a trigger).
GRANT SELECT ON cxr_triage_meta, decisions_issued TO cxr_triage_readers;

-- One login role per reader, for example:
-- CREATE ROLE dr_lee LOGIN PASSWORD 'change-me' IN ROLE cxr_triage_readers;
