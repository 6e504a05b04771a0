-- Run once, when the data directory is initialised: every server of the
-- cluster has the SQL API; the store's tables are those of the server
-- that durable_cluster.store names (or this one, when it is empty).
CREATE EXTENSION IF NOT EXISTS durable_cluster;
