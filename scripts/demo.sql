--
-- scripts/demo.sql
--     The durable_cluster tutorial, as "make demo" (scripts/demo.sh) runs it.
--
-- One user of one mall, mall001/user001, goes through a session: log in,
-- look at the state, set a nickname, add and spend money (once more than
-- there is), get a refund.  Every command goes to the single node that owns
-- the entity's shard; the reply carries the new state, its revision, the
-- shard and the node.  Then the durable side: what is stored, and how the
-- shards are spread over the nodes; a retry that is applied once, a tell,
-- a command added without recompiling, a transfer, and what each node did.
--
-- Expects a server with durable_cluster preloaded, CREATE EXTENSION done in
-- this database, and the nodes up; can be rerun, although the balance then
-- goes on from where the last run left it.
--

-- Show each query before its result, so the output reads as a transcript.
-- QUIET keeps the \pset switches below from announcing themselves.
\set ECHO queries
\set ON_ERROR_STOP on
\set QUIET on
\pset pager off

-- Replies are JSON: print jsonb_pretty's lines as they are, without the
-- table frame and the "+" that aligned format puts at every line break.
\pset format unaligned
\pset tuples_only on

\echo
\echo '---- 1. Log in.  The first command to an entity creates it. ----'
SELECT jsonb_pretty(dc.send_command('mall001', 'user001', 'login'));

\echo
\echo '---- 2. The state as the owning node holds it. ----'
SELECT jsonb_pretty(dc.send_command('mall001', 'user001', 'get_state'));

\echo
\echo '---- 3. Set a nickname. ----'
SELECT jsonb_pretty(dc.send_command('mall001', 'user001', 'update_profile',
                                    '{"nickname": "Alice"}'));

\echo
\echo '---- 4. Add 100.50 to the balance. ----'
SELECT jsonb_pretty(dc.send_command('mall001', 'user001', 'add_balance',
                                    '{"amount": 100.50}'));

\echo
\echo '---- 5. Spend 30. ----'
SELECT jsonb_pretty(dc.send_command('mall001', 'user001', 'deduct_balance',
                                    '{"amount": 30}'));

\echo
\echo '---- 6. Try to spend 1000: more than the balance.  The node refuses ----'
\echo '----    ("ok": false, "error": "insufficient_balance"); nothing changes. ----'
SELECT jsonb_pretty(dc.send_command('mall001', 'user001', 'deduct_balance',
                                    '{"amount": 1000}'));

\echo
\echo '---- 7. A refund of 10.  Balance: 100.50 - 30 + 10 = 80.50. ----'
SELECT jsonb_pretty(dc.send_command('mall001', 'user001', 'refund_balance',
                                    '{"amount": 10}'));

\echo
\echo '---- 8. The last committed state, read from storage (not from the node). ----'
SELECT jsonb_pretty(dc.get_state('mall001', 'user001'));

-- Back to tables for the rest, apart from the cluster status.
\pset format aligned
\pset tuples_only off

\echo
\echo '---- 9. The row behind it. ----'
SELECT mall_id, user_id, shard_id, revision,
       state->>'balance' AS balance, state->>'nickname' AS nickname, updated_at
  FROM durable_cluster.entity_state
 WHERE mall_id = 'mall001' AND user_id = 'user001';

\echo
\echo '---- 10. Which shard the entity hashes to (62 for mall001/user001). ----'
SELECT dc.shard_id('mall001', 'user001') AS shard_id;

\echo
\echo '---- 11. The cluster as this server sees it. ----'
\pset format unaligned
\pset tuples_only on
SELECT jsonb_pretty(dc.cluster_status());
\pset format aligned
\pset tuples_only off

\echo
\echo '---- 12. The members (nodes). ----'
-- One member per record: the rows are too wide for a terminal.
\x on
SELECT * FROM dc.members ORDER BY 1;
\x off

\echo
\echo '---- 13. How many shards each node owns. ----'
SELECT node, count(*) AS shards
  FROM dc.shards
 GROUP BY node
 ORDER BY node;

\echo
\echo '---- 14. A command with a command_id, sent twice: applied once, and the ----'
\echo '----     retry gets the original reply (safe after a timeout or a lost ----'
\echo '----     connection). ----'
SELECT dc.send_command('mall001', 'user001', 'add_balance',
                       '{"amount": 5, "command_id": "demo-gift-1"}') -> 'revision' AS revision;
SELECT dc.send_command('mall001', 'user001', 'add_balance',
                       '{"amount": 5, "command_id": "demo-gift-1"}') -> 'revision' AS revision;

\echo
\echo '---- 15. Fire and forget: dc.tell returns once the owner has the command. ----'
SELECT dc.tell('mall001', 'user002', 'login');

\echo
\echo '---- 16. A new command without recompiling: a SQL function returns the ----'
\echo '----     new state, dc.register_command makes it a command. ----'
CREATE OR REPLACE FUNCTION update_email(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(payload ->> 'email', '') !~ '^[^@\s]+@[^@\s]+$' THEN
        RAISE EXCEPTION 'update_email needs an "email" such as "a@example.com"'
              USING ERRCODE = 'check_violation';
    END IF;
    RETURN state || jsonb_build_object('email', payload ->> 'email');
END
$$;
SELECT count(dc.register_command('update_email', 'update_email(jsonb, jsonb)')) AS registered
  FROM (SELECT WHERE NOT EXISTS (SELECT FROM dc.commands WHERE name = 'update_email')) x;
SELECT dc.send_command('mall001', 'user001', 'update_email',
                       '{"email": "alice@example.com"}') -> 'state' AS state;

\echo
\echo '---- 17. A transfer: deduct, add (refund if the add is rejected), each ----'
\echo '----     step recorded with the step itself in dc.sagas. ----'
SELECT dc.transfer('mall001', 'user001', 'mall001', 'user002', 10) AS transfer \gset
\echo :transfer
SELECT saga_id, from_user, to_user, amount, step, status
  FROM dc.sagas WHERE saga_id = (:'transfer'::jsonb ->> 'saga_id')::bigint;

\echo
\echo '---- 18. What each node did. ----'
SELECT node, entities_in_memory, commands, batches, avg_commands_per_batch, passivations
  FROM dc.node_stats;
