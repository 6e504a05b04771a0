-- examples/setup.sql
--     What the client examples need on the server: the extension, and an
--     application role that may use the API and nothing else (dc_client).
--     Run as a superuser; safe to run again.
CREATE EXTENSION IF NOT EXISTS durable_cluster;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'example_app') THEN
        CREATE ROLE example_app LOGIN IN ROLE dc_client;
    END IF;
END
$$;
-- the password the examples use (EXAMPLE_PASSWORD), for scram-sha-256 over TCP
ALTER ROLE example_app PASSWORD :'example_password';
