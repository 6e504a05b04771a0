--
-- Commands inside the caller's transaction: dc_send_command_at_commit
-- records a command that is applied once after the transaction commits,
-- and never if it rolls back; dc_command_outcome tells what became of it.
--
CREATE FUNCTION wait_for_outcome(m text, u text, id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '30 seconds';
    o jsonb;
BEGIN
    LOOP
        o := dc_command_outcome(m, u, id);
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
SELECT dc_send_command_at_commit('atc', 'u1', 'add_balance', '{"amount": "5.00", "command_id": "r1"}');
SELECT dc_command_outcome('atc', 'u1', 'r1') ->> 'status' AS inside;
ROLLBACK;
SELECT dc_command_outcome('atc', 'u1', 'r1') AS after_rollback;

-- committed: applied once, in submission order, after the commit
BEGIN;
SELECT dc_send_command_at_commit('atc', 'u1', 'add_balance', '{"amount": "5.00", "command_id": "c1"}');
SELECT dc_send_command_at_commit('atc', 'u1', 'deduct_balance', '{"amount": "2.50", "command_id": "c2"}');
SELECT dc_get_state('atc', 'u1') ->> 'revision' AS not_yet;
COMMIT;
SELECT wait_for_outcome('atc', 'u1', 'c1') AS c1;
SELECT wait_for_outcome('atc', 'u1', 'c2') AS c2;
SELECT dc_get_state('atc', 'u1') #>> '{state,balance}' AS balance;
-- the reply is the command log's too: the same command_id gets it again
SELECT dc_send_command('atc', 'u1', 'add_balance', '{"amount": "5.00", "command_id": "c1"}') ->> 'revision' AS replayed;

-- without a command_id, one is made; a rejection is a reply, an error is kept
BEGIN;
SELECT dc_send_command_at_commit('atc', 'u2', 'login') LIKE 'commit-%' AS made_id;
SELECT dc_send_command_at_commit('atc', 'u2', 'deduct_balance', '{"amount": 1, "command_id": "too-much"}');
COMMIT;
SELECT wait_for_outcome('atc', 'u2', 'too-much') -> 'reply' ->> 'error' AS rejected;

-- a handler cancelled at command_timeout (57014) fails its command for
-- good, and the entity's next command is not held back behind it
CREATE FUNCTION atc_slow(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT pg_sleep(3); SELECT state $$;
SELECT dc_register_command('atc_slow', 'atc_slow(jsonb, jsonb)');
BEGIN;
SELECT dc_send_command_at_commit('atc', 'u4', 'atc_slow', '{"command_id": "slow"}');
SELECT dc_send_command_at_commit('atc', 'u4', 'login', '{"command_id": "after-slow"}');
COMMIT;
SELECT o ->> 'status' AS status, o ->> 'sqlstate' AS sqlstate
  FROM wait_for_outcome('atc', 'u4', 'slow') o;
SELECT wait_for_outcome('atc', 'u4', 'after-slow') -> 'reply' ->> 'result' AS next_one;
SELECT dc_unregister_command('atc_slow');
DROP FUNCTION atc_slow(jsonb, jsonb);

-- checked at once, in the caller's transaction, as dc_send_command is
SELECT dc_send_command_at_commit('atc', 'u3', 'fly');
SELECT dc_send_command_at_commit('atc', 'u3', 'add_balance', '{"amount": -1}');
SELECT dc_send_command_at_commit('atc', 'u3', 'login', '{"command_id": "commit-7"}');
SELECT :'LAST_ERROR_SQLSTATE' AS reserved_prefix;
BEGIN;
SELECT dc_send_command_at_commit('atc', 'u3', 'login', '{"command_id": "twice"}');
SELECT dc_send_command_at_commit('atc', 'u3', 'login', '{"command_id": "twice"}');
ROLLBACK;

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
SELECT dc_send_command_at_commit('atc', 'u5', 'login') LIKE 'commit-%' AS made_id;
SELECT dc_command_outcome('atc', 'u5', 'nothing') IS NULL AS no_outcome;
RESET search_path;
RESET ROLE;
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'atc_attacker';
SELECT count(*) AS evil_operator_ran FROM public.atc_ran;
DROP OPERATOR public.|| (text, bigint);
DROP FUNCTION public.atc_evil(text, bigint);
DROP TABLE public.atc_ran;
REVOKE CREATE ON SCHEMA public FROM atc_attacker;
DROP ROLE atc_attacker;

DROP FUNCTION wait_for_outcome(text, text, text);
