--
-- dc.send_commands: many commands in one call, one row per command in
-- input order.  Bad input fails the call and sends nothing; a command
-- that fails on its node gets its own error row, and the others go on.
--

-- one row per command, in input order; commands to one entity apply in
-- that order (revisions 1, 2, 3 for b1)
SELECT n, reply ->> 'ok' AS ok, reply ->> 'result' AS result,
       reply -> 'state' ->> 'user_id' AS user_id, reply -> 'revision' AS revision,
       reply -> 'state' -> 'balance' AS balance, reply ->> 'error' AS error,
       sqlstate, message
  FROM dc.send_commands('[
    {"mall_id": "bulk", "user_id": "b1", "command": "add_balance", "payload": {"amount": "10.00"}},
    {"mall_id": "bulk", "user_id": "b2", "command": "login"},
    {"mall_id": "bulk", "user_id": "b1", "command": "deduct_balance", "payload": {"amount": "2.50"}},
    {"mall_id": "bulk", "user_id": "b3", "command": "deduct_balance", "payload": {"amount": 1}},
    {"mall_id": "bulk", "user_id": "b1", "command": "add_balance", "payload": {"amount": 1, "command_id": "k1"}},
    {"mall_id": "bulk", "user_id": "b1", "command": "add_balance", "payload": {"amount": 1, "command_id": "k1"}},
    {"mall_id": "bulk", "user_id": "b1", "command": "add_balance", "payload": {"amount": 2, "command_id": "k1"}},
    {"mall_id": "bulk", "user_id": "b2", "command": "get_state", "payload": {}}
  ]')
 ORDER BY n;

-- what was stored is what the rows said
SELECT r -> 'revision' AS revision, r -> 'state' -> 'balance' AS balance
  FROM dc.get_state('bulk', 'b1') r;
SELECT r -> 'revision' AS revision FROM dc.get_state('bulk', 'b3') r;

-- a retry of the whole call with the same command_ids applies nothing again
SELECT n, reply -> 'revision' AS revision, sqlstate
  FROM dc.send_commands('[
    {"mall_id": "bulk", "user_id": "b1", "command": "add_balance", "payload": {"amount": 1, "command_id": "k1"}}
  ]');

-- many entities and many commands per entity in one call
SELECT count(*) AS rows, count(reply) AS replies, min(n) AS first, max(n) AS last
  FROM dc.send_commands((
    SELECT jsonb_agg(jsonb_build_object('mall_id', 'bulk', 'user_id', 'm' || (i % 97),
                                        'command', 'add_balance',
                                        'payload', jsonb_build_object('amount', '0.01'))
                     ORDER BY i)
      FROM generate_series(1, 1000) i));
SELECT count(*) AS entities, sum(revision) AS revisions, sum((state ->> 'balance')::numeric) AS total
  FROM durable_cluster.entity_state WHERE mall_id = 'bulk' AND user_id LIKE 'm%';
-- per entity, the replies' revisions rise in input order
SELECT bool_and(ordered) AS in_input_order FROM (
  SELECT (reply -> 'revision')::int > lag((reply -> 'revision')::int, 1, 0)
           OVER (PARTITION BY reply -> 'state' ->> 'user_id' ORDER BY n) AS ordered
    FROM dc.send_commands((
      SELECT jsonb_agg(jsonb_build_object('mall_id', 'bulk', 'user_id', 'm' || (i % 7),
                                          'command', 'add_balance',
                                          'payload', jsonb_build_object('amount', '0.01'))
                       ORDER BY i)
        FROM generate_series(1, 70) i))) o;

-- an empty array: no rows
SELECT count(*) FROM dc.send_commands('[]');

-- bad input fails the call, names the command, and sends nothing: the
-- first command of each call below would have been applied otherwise
\set VERBOSITY default
SELECT * FROM dc.send_commands(NULL);
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('{"mall_id": "bulk"}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"}, 7]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"},
                                 {"mall_id": "bulk", "user_id": "z2", "command": "fly"}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"},
                                 {"mall_id": "bulk", "user_id": "z2", "command": "add_balance", "payload": {"amount": "1.001"}}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"},
                                 {"mall_id": "bulk", "user_id": "", "command": "login"}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"},
                                 {"mall_id": "bulk", "command": "login"}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"},
                                 {"mall_id": "bulk", "user_id": 5, "command": "login"}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"},
                                 {"mall_id": "bulk", "user_id": "z2", "command": "login", "amount": 5}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"},
                                 {"mall_id": "bulk", "user_id": "z2", "command": "login", "payload": "{}"}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
-- the bound: 1000 commands per call
SELECT count(*) FROM dc.send_commands((
    SELECT jsonb_agg(jsonb_build_object('mall_id', 'bulk', 'user_id', 'z1', 'command', 'login'))
      FROM generate_series(1, 1001)));
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
\set VERBOSITY terse
SELECT (dc.get_state('bulk', 'z1') ->> 'revision') = '0' AS nothing_sent;

-- who may call it: dc_client, within its malls
CREATE ROLE bulk_outsider;
CREATE ROLE bulk_tenant IN ROLE dc_client;
SELECT dc.restrict_role('bulk_tenant', '{bulk}');
SET ROLE bulk_outsider;
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "z1", "command": "login"}]');
RESET ROLE;
SET ROLE bulk_tenant;
SELECT n, reply ->> 'result' AS result FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "t1", "command": "login"}]');
-- a mall it may not reach fails the whole call, before anything is sent
SELECT * FROM dc.send_commands('[{"mall_id": "bulk", "user_id": "t2", "command": "login"},
                                 {"mall_id": "other", "user_id": "t2", "command": "login"}]');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET ROLE;
SELECT (dc.get_state('bulk', 't2') ->> 'revision') = '0' AS nothing_sent;
SELECT dc.unrestrict_role('bulk_tenant');
DROP ROLE bulk_outsider;
DROP ROLE bulk_tenant;
