--
-- Cluster status, members and shards.
--
SELECT s -> 'number_of_members' AS members, s -> 'number_of_shards' AS shards,
       s ->> 'self_address' = durable_cluster.self_address() AS self_address_ok,
       s -> 'self_roles' AS self_roles,
       jsonb_array_length(s -> 'members') AS listed
  FROM dc.cluster_status() s;

SELECT m ->> 'name' AS name, m ->> 'status' AS status, m ->> 'shards' AS shards,
       m -> 'shard_count' AS shard_count, m -> 'roles' AS roles,
       m -> 'incarnation' AS incarnation,
       (m ->> 'heartbeat_age_ms')::int < 10000 AS fresh_heartbeat
  FROM jsonb_array_elements(dc.cluster_status() -> 'members') m;

SELECT name, status, incarnation, shard_count, shards, first_shard, last_shard,
       heartbeat_age < interval '10 seconds' AS fresh, address = durable_cluster.self_address() AS here
  FROM dc.members;

SELECT node, count(*) AS shards, min(shard_id) AS first, max(shard_id) AS last,
       bool_and(epoch > 0) AS epochs_set
  FROM dc.shards GROUP BY node ORDER BY node;

-- the nodes and the saga worker as PostgreSQL shows them
-- (one type for every node; its application_name is its member name)
SELECT backend_type, application_name FROM pg_stat_activity
 WHERE backend_type LIKE 'durable_cluster%' ORDER BY 1, 2;

