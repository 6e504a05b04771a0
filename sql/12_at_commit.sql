--
-- Commands inside the caller's transaction: dc.send_command_at_commit
-- records a command that is applied once after the transaction commits,
-- and never if it rolls back; dc.command_outcome tells what became of it.
--
CREATE FUNCTION wait_for_outcome(m text, u text, id text, command text,
                                 payload jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '30 seconds';
    o jsonb;
BEGIN
    LOOP
        o := dc.command_outcome(m, u, id, command, payload);
        IF o ->> 'status' <> 'pending' THEN
            RETURN o - 'submitted_at' - 'done_at' #- '{reply,state,last_event_time}';
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'no outcome for % within 30 s', id;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

-- rolled back: never applied, no outcome
BEGIN;
SELECT dc.send_command_at_commit('atc', 'u1', 'add_balance', '{"amount": "5.00", "command_id": "r1"}');
SELECT dc.command_outcome('atc', 'u1', 'r1', 'add_balance', '{"amount": "5.00"}') ->> 'status' AS inside;
ROLLBACK;
SELECT dc.command_outcome('atc', 'u1', 'r1', 'add_balance', '{"amount": "5.00"}') AS after_rollback;

-- committed: applied once, in submission order, after the commit
BEGIN;
SELECT dc.send_command_at_commit('atc', 'u1', 'add_balance', '{"amount": "5.00", "command_id": "c1"}');
SELECT dc.send_command_at_commit('atc', 'u1', 'deduct_balance', '{"amount": "2.50", "command_id": "c2"}');
SELECT dc.get_state('atc', 'u1') ->> 'revision' AS not_yet;
COMMIT;
SELECT wait_for_outcome('atc', 'u1', 'c1', 'add_balance', '{"amount": "5.00"}') AS c1;
SELECT wait_for_outcome('atc', 'u1', 'c2', 'deduct_balance', '{"amount": "2.50"}') AS c2;
SELECT dc.get_state('atc', 'u1') #>> '{state,balance}' AS balance;
-- the reply is the command log's too: the same command_id gets it again
SELECT dc.send_command('atc', 'u1', 'add_balance', '{"amount": "5.00", "command_id": "c1"}') ->> 'revision' AS replayed;
-- the outcome is bound to its command, as a logged reply is: asked for as
-- another command it is 23505; the same amount written otherwise is the
-- same command, and a command_id in the payload is the argument's
SELECT try($$SELECT dc.command_outcome('atc', 'u1', 'c1', 'deduct_balance', '{"amount": "5.00"}')$$);
SELECT try($$SELECT dc.command_outcome('atc', 'u1', 'c1', 'add_balance', '{"amount": 6}')$$);
SELECT dc.command_outcome('atc', 'u1', 'c1', 'add_balance', '{"amount": 5, "command_id": "c1"}') ->> 'status' AS same_command;
SELECT try($$SELECT dc.command_outcome('atc', 'u1', 'c1', NULL)$$);

-- without a command_id, one is made; a rejection is a reply, an error is kept
BEGIN;
SELECT dc.send_command_at_commit('atc', 'u2', 'login') LIKE 'commit-%' AS made_id;
SELECT dc.send_command_at_commit('atc', 'u2', 'deduct_balance', '{"amount": 1, "command_id": "too-much"}');
COMMIT;
SELECT wait_for_outcome('atc', 'u2', 'too-much', 'deduct_balance', '{"amount": 1}') -> 'reply' ->> 'error' AS rejected;

-- an id taken ahead of the application's command, by a role that may
-- only read: the application's command is refused (23505), and asking for
-- its outcome is refused too, instead of reading the reader's "done, ok"
CREATE ROLE atc_reader IN ROLE dc_client;
SELECT dc.restrict_role('atc_reader', '{atc}', '{get_state}');
SET ROLE atc_reader;
BEGIN;
SELECT dc.send_command_at_commit('atc', 'u2', 'get_state', '{"command_id": "order-77"}');
COMMIT;
RESET ROLE;
SELECT wait_for_outcome('atc', 'u2', 'order-77', 'get_state') ->> 'status' AS readers_outcome;
BEGIN;
SELECT try($$SELECT dc.send_command_at_commit('atc', 'u2', 'deduct_balance', '{"amount": 1, "command_id": "order-77"}')$$);
COMMIT;
SELECT try($$SELECT dc.command_outcome('atc', 'u2', 'order-77', 'deduct_balance', '{"amount": 1}')$$);
-- (the short name of 0.1 asks for no command, and answers for whichever
-- command has the id: call dc.command_outcome)
SELECT dc_command_outcome('atc', 'u2', 'order-77') ->> 'status' AS unbound_short_name;
SELECT dc.unrestrict_role('atc_reader');
DROP ROLE atc_reader;

-- a handler cancelled at command_timeout (57014) fails its command for
-- good, and the entity's next command is not held back behind it
CREATE FUNCTION atc_slow(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT pg_sleep(3); SELECT state $$;
SELECT dc.register_command('atc_slow', 'atc_slow(jsonb, jsonb)');
BEGIN;
SELECT dc.send_command_at_commit('atc', 'u4', 'atc_slow', '{"command_id": "slow"}');
SELECT dc.send_command_at_commit('atc', 'u4', 'login', '{"command_id": "after-slow"}');
COMMIT;
SELECT o ->> 'status' AS status, o ->> 'sqlstate' AS sqlstate
  FROM wait_for_outcome('atc', 'u4', 'slow', 'atc_slow') o;
SELECT wait_for_outcome('atc', 'u4', 'after-slow', 'login') -> 'reply' ->> 'result' AS next_one;
SELECT dc.unregister_command('atc_slow');
DROP FUNCTION atc_slow(jsonb, jsonb);

-- checked at once, in the caller's transaction, as dc.send_command is
SELECT dc.send_command_at_commit('atc', 'u3', 'fly');
SELECT dc.send_command_at_commit('atc', 'u3', 'add_balance', '{"amount": -1}');
SELECT dc.send_command_at_commit('atc', 'u3', 'login', '{"command_id": "commit-7"}');
SELECT :'LAST_ERROR_SQLSTATE' AS reserved_prefix;
BEGIN;
SELECT dc.send_command_at_commit('atc', 'u3', 'login', '{"command_id": "twice"}');
SELECT dc.send_command_at_commit('atc', 'u3', 'login', '{"command_id": "twice"}');
ROLLBACK;

-- every payload is bounded, a built-in command's too
SELECT try(format($$SELECT dc.send_command_at_commit('atc', 'u6', 'login', '{"pad": "%s"}')$$, repeat('p', 3000)));
-- what is wrong with one waiting row fails that command alone, and the
-- others of its round go: a payload over the bound (as 0.1 and 0.2 let through,
-- never read), roles that are no list of roles, a role that is gone
INSERT INTO durable_cluster.pending_commands (id, mall_id, user_id, command, payload, command_id,
                                              role_name, roles)
SELECT nextval('durable_cluster.pending_commands_id_seq'), 'atc', 'u6', c.command, c.payload, c.id,
       current_user, c.roles
  FROM (VALUES ('login', jsonb_build_object('pad', repeat('p', 1000000)), 'bad-huge', NULL::text[]),
               ('login', '{}'::jsonb, 'bad-roles', '{}'::text[]),
               ('login', '{}'::jsonb, 'bad-gone', '{no_such_role}'::text[]),
               ('teleport', '{}'::jsonb, 'bad-command', NULL::text[])) c(command, payload, id, roles);
INSERT INTO durable_cluster.pending_commands (id, mall_id, user_id, command, payload, command_id, role_name)
VALUES (nextval('durable_cluster.pending_commands_id_seq'), 'atc', 'u7', 'login', '{}', 'good', current_user);
SELECT wait_until($$SELECT count(*) = 0 FROM durable_cluster.pending_commands
                    WHERE status = 'pending' AND mall_id = 'atc'$$);
SELECT command_id, status, sqlstate, message FROM durable_cluster.pending_commands
 WHERE user_id IN ('u6', 'u7') ORDER BY id;

-- clients have the functions, not the table
SET ROLE dc_client;
SELECT count(*) FROM durable_cluster.pending_commands;
RESET ROLE;

-- the caller's search_path does not reach the statements these functions
-- run as the table's owner: an operator a client puts before pg_catalog
-- never runs (it would make its creator a superuser)
CREATE ROLE atc_attacker IN ROLE dc_client;
GRANT CREATE ON SCHEMA public TO atc_attacker;
CREATE TABLE public.atc_ran (who text);
GRANT INSERT ON public.atc_ran TO PUBLIC;
SET ROLE atc_attacker;
CREATE FUNCTION public.atc_evil(text, bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.atc_ran VALUES (current_user);
    EXECUTE 'ALTER ROLE atc_attacker SUPERUSER';
    RETURN $1 OPERATOR(pg_catalog.||) $2::text;
END
$$;
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = bigint, FUNCTION = public.atc_evil);
SET search_path = public, pg_catalog;
SELECT dc.send_command_at_commit('atc', 'u5', 'login') LIKE 'commit-%' AS made_id;
SELECT dc.command_outcome('atc', 'u5', 'nothing', 'login') IS NULL AS no_outcome;
RESET search_path;
RESET ROLE;
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'atc_attacker';
SELECT count(*) AS evil_operator_ran FROM public.atc_ran;
DROP OPERATOR public.|| (text, bigint);
DROP FUNCTION public.atc_evil(text, bigint);
DROP TABLE public.atc_ran;
REVOKE CREATE ON SCHEMA public FROM atc_attacker;
DROP ROLE atc_attacker;

DROP FUNCTION wait_for_outcome(text, text, text, text, jsonb);
