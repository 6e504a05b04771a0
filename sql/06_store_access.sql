--
-- Direct access to the tables by primary key (state_table.c).
--
-- durable_cluster.write_batch(), the store's side of a node's batch: the
-- fence, revisions, and all or nothing.  Entities of mall 'wb' are written
-- here behind the nodes' backs, so no command ever touches them.  A batch
-- is one durable_cluster.batch; wb() makes one of u1's shard's fence and
-- the given entities, command log entries and saga steps.
--
CREATE TEMP VIEW wb_shard AS
SELECT s.node, s.shard_id, s.epoch FROM durable_cluster.shards s
 WHERE s.shard_id = dc.shard_id('wb', 'u1');
CREATE FUNCTION pg_temp.wb(node text, epoch bigint,
                           entities durable_cluster.batch_entity[],
                           log durable_cluster.batch_log_entry[] DEFAULT '{}')
RETURNS durable_cluster.batch LANGUAGE sql AS $$
    SELECT ROW(node, ARRAY[ROW(dc.shard_id('wb', 'u1'), epoch)]::durable_cluster.batch_shard[],
               entities, log, '{}')::durable_cluster.batch
$$;
-- an entity of mall 'wb' at new revision rev, replacing old (0: a new row)
CREATE FUNCTION pg_temp.wbe(user_id text, state jsonb, rev bigint, old bigint)
RETURNS durable_cluster.batch_entity LANGUAGE sql AS $$
    SELECT ROW('wb', user_id, dc.shard_id('wb', user_id), state, rev, old)::durable_cluster.batch_entity
$$;

-- a new row, written by the owner at its epoch
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch, ARRAY[pg_temp.wbe('u1', '{"n": 1}', 1, 0)]))
  FROM wb_shard;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- fenced: another node's name, or an epoch the shard no longer has; nothing written
SELECT durable_cluster.write_batch(pg_temp.wb('no-such-node', epoch,
                                              ARRAY[pg_temp.wbe('u1', '{"n": 2}', 2, 1)]))
       = ARRAY[shard_id] AS fenced
  FROM wb_shard;
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch - 1,
                                              ARRAY[pg_temp.wbe('u1', '{"n": 2}', 2, 1)]))
       = ARRAY[shard_id] AS fenced
  FROM wb_shard;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- a stale revision fails the whole batch: the new row u2 is not kept
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch,
                                              ARRAY[pg_temp.wbe('u2', '{"n": 1}', 1, 0),
                                                    pg_temp.wbe('u1', '{"n": 9}', 9, 8)]))
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
-- so does a new row whose key exists
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch, ARRAY[pg_temp.wbe('u1', '{"n": 9}', 1, 0)]))
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- malformed batches change nothing either: a NULL batch, part, element
-- or field
SELECT durable_cluster.write_batch(NULL);
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch(ROW(node, NULL, ARRAY[pg_temp.wbe('u1', '{"n": 9}', 2, 1)],
                                       '{}', '{}')::durable_cluster.batch)
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch, ARRAY[pg_temp.wbe('u1', '{"n": 9}', 2, 1), NULL]))
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch,
                                              ARRAY[ROW('wb', NULL, shard_id, '{"n": 9}', 2, 1)]::durable_cluster.batch_entity[]))
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- the next revision, by the owner
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch, ARRAY[pg_temp.wbe('u1', '{"n": 2}', 2, 1)]))
  FROM wb_shard;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb';

-- a batch that only logs a reply (a command that changed nothing), with
-- the request it answered
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch, '{}',
                                              ARRAY[ROW('wb', 'u1', 'c9', '{"ok": true}',
                                                        '{"command": "get_state"}')]::durable_cluster.batch_log_entry[]))
  FROM wb_shard;

-- 0.1's form, sixteen arrays, which 0.1 nodes call during a rolling
-- upgrade: the same batch, and its arrays checked
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb}', '{u3}',
                                   ARRAY[dc.shard_id('wb', 'u3')], ARRAY['{"n": 1}'::jsonb], '{1}', '{0}',
                                   '{wb}', '{u3}', '{c3}', ARRAY['{"ok": true}'::jsonb],
                                   ARRAY['{"command": "login"}'::jsonb])
  FROM wb_shard;
SELECT durable_cluster.write_batch('no-such-node', ARRAY[shard_id], ARRAY[epoch], '{wb}', '{u3}',
                                   ARRAY[dc.shard_id('wb', 'u3')], ARRAY['{"n": 2}'::jsonb], '{2}', '{1}')
       = ARRAY[shard_id] AS fenced
  FROM wb_shard;
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb,wb}', '{u3}',
                                   ARRAY[shard_id], ARRAY['{"n": 9}'::jsonb], '{2}', '{1}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], ARRAY[epoch], '{wb}', '{NULL}',
                                   ARRAY[shard_id], ARRAY['{"n": 9}'::jsonb], '{2}', '{1}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch(node, ARRAY[shard_id], NULL, '{wb}', '{u3}',
                                   ARRAY[shard_id], ARRAY['{"n": 9}'::jsonb], '{2}', '{1}')
  FROM wb_shard;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT user_id, state, revision FROM durable_cluster.entity_state WHERE mall_id = 'wb' ORDER BY user_id;
SELECT user_id, command_id, reply FROM durable_cluster.command_log WHERE mall_id = 'wb' ORDER BY command_id;

-- durable_cluster.load_batch(): the stored states and logged replies a
-- batch needs, in one call; what is not stored has no row
SELECT what, ord, doc, revision, request
  FROM durable_cluster.load_batch('{wb,wb}', '{u1,u2}', '{wb,wb}', '{u1,u1}', '{c9,c10}')
 ORDER BY what, ord;

-- dc.get_state reads it the same way
SELECT dc.get_state('wb', 'u1'), (dc.get_state('wb', 'u2') ->> 'revision') = '0' AS never_stored;

-- only the cluster's role may call write_batch, even with the schema
-- open; dc.get_state is for dc_client, and needs no privilege on the
-- table (which would let a client read every mall)
CREATE ROLE wb_user;
SET ROLE wb_user;
SELECT durable_cluster.write_batch(ROW('x', '{}', '{}', '{}', '{}'));
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch('x', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.get_state('wb', 'u1');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET ROLE;
GRANT USAGE ON SCHEMA durable_cluster TO wb_user;
SET ROLE wb_user;
SELECT durable_cluster.write_batch(ROW('x', '{}', '{}', '{}', '{}'));
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT durable_cluster.write_batch('x', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET ROLE;
GRANT dc_client TO wb_user;
SET ROLE wb_user;
SELECT dc.get_state('wb', 'u1');
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
SELECT durable_cluster.write_batch(pg_temp.wb(node, epoch,
                                              ARRAY[pg_temp.wbe('u1', '{"n": 3}', 3, 2),
                                                    pg_temp.wbe('u5', '{"n": 1}', 1, 0)]))
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
