--
-- A fresh extension, served by the nodes of the test server.
--
-- The server must run with shared_preload_libraries = 'durable_cluster' and
-- the default durable_cluster.nodes = 3 (test/run_tests.sh starts one).
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS durable_cluster CASCADE;
DROP ROLE IF EXISTS setup_squatter;
RESET client_min_messages;
-- the API goes to a schema of its own, dc: one someone else made first is
-- not taken over
CREATE ROLE setup_squatter;
CREATE SCHEMA dc AUTHORIZATION setup_squatter;
CREATE EXTENSION durable_cluster;
DROP SCHEMA dc;
DROP ROLE setup_squatter;
CREATE EXTENSION durable_cluster;

-- Wait, with a deadline of 60 s, until a query returns true.
CREATE OR REPLACE FUNCTION wait_until(condition text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
    done boolean;
BEGIN
    LOOP
        EXECUTE condition INTO done;
        IF done THEN
            RETURN 'ready';
        END IF;
        IF clock_timestamp() > deadline THEN
            RETURN 'timed out';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

-- Wait until the nodes joined and own every shard.
CREATE OR REPLACE FUNCTION wait_for_cluster(nodes int, shards int) RETURNS text
LANGUAGE sql AS $$
    SELECT wait_until(format($q$
        SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = %s
           AND (SELECT count(*) FROM dc.shards s JOIN dc.members m ON m.name = s.node
                 WHERE m.status = 'up') = %s
           AND (SELECT max(shard_count) - min(shard_count) FROM dc.members
                 WHERE status = 'up') <= 1 $q$, nodes, shards))
$$;

SELECT wait_for_cluster(3, 100);

-- The number of shards can change while the cluster holds no data.
SELECT dc.set_number_of_shards(10);
SELECT wait_for_cluster(3, 10);
SELECT node, count(*) AS shards, min(shard_id) AS first, max(shard_id) AS last
  FROM dc.shards GROUP BY node ORDER BY node;
SELECT dc.shard_id('mall001', 'user001');          -- uses the stored number: 10
SELECT dc.set_number_of_shards(0);
SELECT dc.set_number_of_shards(NULL);
-- a map change too large for one notification (1000 moves) still goes through
SELECT dc.set_number_of_shards(1000);
SELECT wait_for_cluster(3, 1000);
SELECT dc.set_number_of_shards(100);
SELECT wait_for_cluster(3, 100);
SELECT dc.shard_id('mall001', 'user001');

-- Replies without the volatile timestamp, which is checked on its own.
CREATE OR REPLACE FUNCTION show(reply jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE WHEN reply #> '{state,last_event_time}' = 'null' THEN reply
                ELSE jsonb_set(reply, '{state,last_event_time}', '"<set>"') END
$$;

-- Runs a statement; returns its SQLSTATE and message, or 'ok'.
CREATE OR REPLACE FUNCTION try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
