--
-- Direct access to the tables by primary key (state_table.c).
--
-- durable_cluster.write_batch(), the store's side of a node's batch: the
-- fence, revisions, and all or nothing.  Entities of mall 'wb' are written
-- here behind the nodes' backs, so no command ever touches them.
--
CREATE TEMP VIEW wb_shard AS
SELECT s.node, s.shard_id, s.epoch FROM durable_cluster.shards s
 WHERE s.shard_id = dc_shard_id('wb', 'u1');

-- a new row, written by the owner at its epoch
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb}', '{u1}',
                                   ARRAY[shard_id], ARRAY['{"n": 1}'::jsonb], '{1}', '{0}')
  FROM wb_shard;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- fenced: another node's name, or an epoch the shard no longer has; nothing written
SELECT durable_cluster.write_batch('no-such-node', ARRAY[shard_id], ARRAY[epoch], '{wb}', '{u1}',
                                   ARRAY[shard_id], ARRAY['{"n": 2}'::jsonb], '{2}', '{1}')
       = ARRAY[shard_id] AS fenced
  FROM wb_shard;
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch - 1], '{wb}', '{u1}',
                                   ARRAY[shard_id], ARRAY['{"n": 2}'::jsonb], '{2}', '{1}')
       = ARRAY[shard_id] AS fenced
  FROM wb_shard;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- a stale revision fails the whole batch: the new row u2 is not kept
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb,wb}', '{u2,u1}',
                                   ARRAY[dc_shard_id('wb', 'u2'), shard_id],
                                   ARRAY['{"n": 1}', '{"n": 9}']::jsonb[], '{1,9}', '{0,8}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
-- so does a new row whose key exists
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb}', '{u1}',
                                   ARRAY[shard_id], ARRAY['{"n": 9}'::jsonb], '{1}', '{0}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- malformed batches change nothing either
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb,wb}', '{u1}',
                                   ARRAY[shard_id], ARRAY['{"n": 9}'::jsonb], '{2}', '{1}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb}', '{NULL}',
                                   ARRAY[shard_id], ARRAY['{"n": 9}'::jsonb], '{2}', '{1}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], NULL, '{wb}', '{u1}',
                                   ARRAY[shard_id], ARRAY['{"n": 9}'::jsonb], '{2}', '{1}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- the next revision, by the owner
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb}', '{u1}',
                                   ARRAY[shard_id], ARRAY['{"n": 2}'::jsonb], '{2}', '{1}')
  FROM wb_shard;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- a batch that only logs a reply (a command that changed nothing), with
-- the request it answered
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{}', '{}', '{}', '{}',
                                   '{}', '{}', '{wb}', '{u1}', '{c9}', ARRAY['{"ok": true}'::jsonb],
                                   ARRAY['{"command": "get_state"}'::jsonb])
  FROM wb_shard;

-- durable_cluster.load_batch(): the stored states and logged replies a
-- batch needs, in one call; what is not stored has no row
SELECT what, ord, doc, revision, request
  FROM durable_cluster.load_batch('{wb,wb}', '{u1,u2}', '{wb,wb}', '{u1,u1}', '{c9,c10}')
 ORDER BY what, ord;

-- dc_get_state reads it the same way
SELECT dc_get_state('wb', 'u1'), (dc_get_state('wb', 'u2') ->> 'revision') = '0' AS never_stored;

-- only the cluster's role may call write_batch, even with the schema
-- open; dc_get_state is for dc_client, and needs no privilege on the
-- table (which would let a client read every mall)
CREATE ROLE wb_user;
SET ROLE wb_user;
SELECT durable_cluster.write_batch('x', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc_get_state('wb', 'u1');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET ROLE;
GRANT USAGE ON SCHEMA durable_cluster TO wb_user;
SET ROLE wb_user;
SELECT durable_cluster.write_batch('x', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET ROLE;
GRANT dc_client TO wb_user;
SET ROLE wb_user;
SELECT dc_get_state('wb', 'u1');
SELECT * FROM durable_cluster.entity_state WHERE mall_id = 'wb';
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET ROLE;

-- row triggers on the table fire for batch writes too, and leave nothing open
CREATE TABLE wb_audit (user_id text, revision bigint);
CREATE FUNCTION wb_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.wb_audit VALUES (NEW.user_id, NEW.revision);
    RETURN NULL;
END
$$;
CREATE TRIGGER wb_audit AFTER INSERT OR UPDATE ON durable_cluster.entity_state
    FOR EACH ROW EXECUTE FUNCTION wb_audit_row();
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb,wb}', '{u1,u5}',
                                   ARRAY[shard_id, dc_shard_id('wb', 'u5')],
                                   ARRAY['{"n": 3}', '{"n": 1}']::jsonb[], '{3,1}', '{2,0}')
  FROM wb_shard;
SELECT * FROM wb_audit ORDER BY user_id;
DROP TRIGGER wb_audit ON durable_cluster.entity_state;
DROP FUNCTION wb_audit_row();
DROP TABLE wb_audit;

REVOKE dc_client FROM wb_user;
REVOKE ALL ON SCHEMA durable_cluster FROM wb_user;
DROP ROLE wb_user;
DELETE FROM durable_cluster.entity_state WHERE mall_id = 'wb';
DELETE FROM durable_cluster.command_log WHERE mall_id = 'wb';
