#
# test/t/016_fuzz.pl
#     Seeded fuzzing of the SQL API as unprivileged roles: 3,000 calls of
#     every SQL function with ids, commands, payloads and amounts drawn from
#     pools of bad and borderline values (NULL, empty, too long, control and
#     bidirectional characters, quotes, wrong JSON types, bad numbers,
#     reserved and oversized command ids), as a dc_client role, as a role
#     without privileges, and admin functions as a client.  Checked:
#
#     - no call ends with an internal error (class XX), and the server never
#       crashes (no backend terminated by a signal in its log);
#     - no entity is stored that no accepted call named: a rejected call
#       changes nothing;
#     - the nodes are the same processes at the end, all up, and serve.
#
#     The seed is fixed (DC_FUZZ_SEED overrides it), so a failure can be
#     replayed; the calls are written to the test's log directory.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $seed = $ENV{DC_FUZZ_SEED} // 20261201;
my $calls = 3000;
srand($seed);
note("fuzz seed $seed");

my $node = DurableClusterLoad::new_server('fuzz', 2, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.ask_timeout = '3s'
});

$node->safe_psql('postgres', q{
CREATE ROLE fuzz_client IN ROLE dc_client;
CREATE ROLE fuzz_nobody;
CREATE TABLE fuzz_results (i int, fn text, who text, mall text, usr text, mall2 text,
                           usr2 text, outcome text);
GRANT INSERT ON fuzz_results TO PUBLIC;
CREATE FUNCTION fuzz_handler(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state || jsonb_build_object('fz', payload -> 'v') $$;
SELECT dc.register_command('fz_cmd', 'fuzz_handler(jsonb, jsonb)');
-- one call, its outcome recorded: 'ok' or the SQLSTATE it raised
CREATE FUNCTION fuzz_call(i int, fn text, a text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    outcome text := 'ok';
BEGIN
    BEGIN
        CASE fn
            WHEN 'send' THEN PERFORM dc.send_command(a[1], a[2], a[3], a[4]::jsonb);
            WHEN 'tell' THEN PERFORM dc.tell(a[1], a[2], a[3], a[4]::jsonb);
            WHEN 'get_state' THEN PERFORM dc.get_state(a[1], a[2]);
            WHEN 'at_commit' THEN PERFORM dc.send_command_at_commit(a[1], a[2], a[3], a[4]::jsonb);
            WHEN 'outcome' THEN PERFORM dc.command_outcome(a[1], a[2], a[3], a[4], a[5]::jsonb);
            WHEN 'transfer' THEN PERFORM dc.transfer(a[1], a[2], a[3], a[4], a[5]::numeric);
            WHEN 'shard_id' THEN PERFORM dc.shard_id(a[1], a[2], a[3]::int);
            WHEN 'hashcode' THEN PERFORM dc.java_hashcode(a[1]);
            WHEN 'status' THEN PERFORM dc.cluster_status();
            WHEN 'add_node' THEN PERFORM dc.add_node(a[1], a[2]::text[]);
            WHEN 'remove_node' THEN PERFORM dc.remove_node(a[1]);
            WHEN 'register' THEN PERFORM dc.register_command(a[1], 'fuzz_handler(jsonb, jsonb)');
            WHEN 'restrict' THEN PERFORM dc.restrict_role('fuzz_client', ARRAY[a[1]]);
            WHEN 'set_shards' THEN PERFORM dc.set_number_of_shards(a[1]::int);
            WHEN 'forward' THEN
                PERFORM durable_cluster.forward(1, a[1], a[2], a[3], a[4], a[5]::jsonb, NULL,
                                                false, 100);
        END CASE;
    EXCEPTION WHEN OTHERS THEN
        outcome := SQLSTATE;
    END;
    INSERT INTO fuzz_results
         VALUES (i, fn, current_user, a[1], a[2],
                 CASE WHEN fn = 'transfer' THEN a[3] END,
                 CASE WHEN fn = 'transfer' THEN a[4] END, outcome);
END
$$;
});

my $pids_query = q{
SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
 WHERE backend_type LIKE 'durable_cluster node%'};
my $pids_before = $node->safe_psql('postgres', $pids_query);

# ---- value pools ----

sub pick { return $_[ int(rand(@_)) ]; }

# A string as a SQL expression: printable ASCII quoted, anything else chr().
sub sql_text
{
	my ($s) = @_;
	return 'NULL' unless defined $s;
	return "''" if $s eq '';
	my @parts;
	for my $piece (split /([^\x20-\x7e])/, $s)
	{
		next if $piece eq '';
		if ($piece =~ /^[^\x20-\x7e]$/)
		{
			push @parts, 'chr(' . ord($piece) . ')';
		}
		else
		{
			(my $q = $piece) =~ s/'/''/g;
			push @parts, "'$q'";
		}
	}
	return join(' || ', @parts);
}

sub an_id
{
	return pick(
		'fz' . int(rand(12)), 'fz' . int(rand(12)), 'fz' . int(rand(12)),
		undef, '', ' ', 'x' x 256, 'y' x 255, "fz\x01", "fz\x{202E}1", "fz\x7f",
		"fz\x{0085}", "fz\t", "fz'q", 'fz"q', 'fz\\', "\x{00FC}" . int(rand(3)),
		"fz\x{2066}", "fz\x{200F}", "fz\n", 'saga-1', 'fz-' . int(rand(3)));
}

sub a_command
{
	return pick('login', 'logout', 'get_state', 'update_profile', 'add_balance',
		'deduct_balance', 'refund_balance', 'fz_cmd', 'add_balance', 'deduct_balance',
		'fly', '', undef, 'LOGIN', 'add_balance ', 'x' x 100, "login\x01", 'saga');
}

sub a_json_amount
{
	return pick('1', '0', '-1', '0.001', '1e13', '1e-400', '1e400', '"5"', '" 5"', '"+5"',
		'".5"', '"5."', '"05"', 'true', 'null', '[]', '{}', '"abc"',
		'99999999999999999999999', '1.5e2', '"NaN"', '"Infinity"', '"-1e13"', '0.01',
		'1000000000000', '1000000000000.01', '"\t7\n"', '12.5', '"1e2"', '-0');
}

sub a_json_string
{
	return pick('"ok"', '""', '"' . ('n' x 70) . '"', '5', 'null', '"a\nb"', '"\u202e"',
		'"\u0000"', '"fine name"', '"\u00fc"', 'true', '[]', '"saga-1-add"', '"c1"',
		'"' . ('c' x 300) . '"', '"a\tb"');
}

sub a_payload
{
	my $r = rand();
	return pick(undef, '{}', '[]', '1', '"x"', 'null', '{"amount"', '{}}') if $r < 0.15;
	my @keys;
	push @keys, '"amount": ' . a_json_amount() if rand() < 0.6;
	push @keys, '"nickname": ' . a_json_string() if rand() < 0.3;
	push @keys, '"command_id": ' . a_json_string() if rand() < 0.3;
	push @keys, '"v": ' . a_json_string() if rand() < 0.2;
	push @keys, '"big": "' . ('b' x 3000) . '"' if rand() < 0.03;
	return '{' . join(', ', @keys) . '}';
}

sub a_number_text
{
	return pick('1', '0', '-5', '1e20', 'NaN', '0.001', undef, '1.5', '1000000000000.01',
		'Infinity', '2', '0.01');
}

# ---- the calls ----

my @lines;
for my $i (1 .. $calls)
{
	my $r = rand();
	my $who = $r < 0.80 ? 'fuzz_client' : $r < 0.95 ? 'fuzz_nobody' : 'fuzz_client';
	my ($fn, @args);
	my $f = rand();
	if ($r >= 0.95)
	{
		# administration, as a client: always refused
		$fn = pick('add_node', 'remove_node', 'register', 'restrict', 'set_shards', 'forward');
		@args = (an_id(), '{}', a_command(), a_command(), a_payload());
		$args[0] = pick('5', '-1', undef, 'x') if $fn eq 'set_shards';
	}
	elsif ($f < 0.40)
	{
		$fn = 'send';
		@args = (an_id(), an_id(), a_command(), a_payload());
	}
	elsif ($f < 0.45)
	{
		$fn = 'at_commit';
		@args = (an_id(), an_id(), a_command(), a_payload());
	}
	elsif ($f < 0.60)
	{
		$fn = 'tell';
		@args = (an_id(), an_id(), a_command(), a_payload());
	}
	elsif ($f < 0.69)
	{
		$fn = 'get_state';
		@args = (an_id(), an_id());
	}
	elsif ($f < 0.72)
	{
		$fn = 'outcome';
		@args = (an_id(), an_id(), an_id(), a_command(), a_payload());
	}
	elsif ($f < 0.88)
	{
		$fn = 'transfer';
		@args = (an_id(), an_id(), an_id(), an_id(), a_number_text());
	}
	elsif ($f < 0.94)
	{
		$fn = 'shard_id';
		@args = (an_id(), an_id(), pick(undef, '10', '0', '-3', '10001', '100'));
	}
	elsif ($f < 0.97)
	{
		$fn = 'hashcode';
		@args = (an_id());
	}
	else
	{
		$fn = 'status';
	}
	my $array = @args ? 'ARRAY[' . join(', ', map { sql_text($_) } @args) . ']::text[]'
	  : q{'{}'::text[]};
	push @lines, "SET ROLE $who; SELECT fuzz_call($i, '$fn', $array); RESET ROLE;";
}
my $script = join("\n", @lines) . "\n";
PostgreSQL::Test::Utils::append_to_file($node->basedir . '/fuzz_calls.sql', $script);

my ($ret, $stdout, $stderr) = $node->psql('postgres', $script, on_error_stop => 0,
	timeout => 600);
is($node->safe_psql('postgres', 'SELECT count(*) FROM fuzz_results'),
	$calls, "all $calls fuzzed calls ran to an outcome");

my $summary = $node->safe_psql('postgres', q{
SELECT string_agg(fn || ' ' || outcome || ' x' || n, E'\n' ORDER BY fn, outcome)
  FROM (SELECT fn, outcome, count(*) n FROM fuzz_results GROUP BY 1, 2) s});
note("outcomes:\n$summary");

is($node->safe_psql('postgres', q{
SELECT count(*) FROM fuzz_results WHERE outcome LIKE 'XX%'}),
	'0', 'no call ended with an internal error');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM fuzz_results WHERE who = 'fuzz_nobody' AND outcome = 'ok'
   AND fn NOT IN ('shard_id', 'hashcode')}),
	'0', 'a role without dc_client got nothing through');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM fuzz_results
 WHERE fn IN ('add_node', 'remove_node', 'register', 'restrict', 'set_shards', 'forward')
   AND outcome <> '42501'}),
	'0', 'administration and internal functions were refused to the client (42501)');
cmp_ok($node->safe_psql('postgres', q{
SELECT count(*) FROM fuzz_results WHERE outcome = 'ok' AND fn IN ('send', 'tell', 'transfer', 'at_commit')}),
	'>', 50, 'some fuzzed commands were valid and accepted');

is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable_cluster.entity_state e
 WHERE NOT EXISTS (SELECT FROM fuzz_results r
                    WHERE r.outcome = 'ok' AND r.fn IN ('send', 'tell', 'transfer', 'at_commit')
                      AND ((r.mall = e.mall_id AND r.usr = e.user_id)
                           OR (r.mall2 = e.mall_id AND r.usr2 = e.user_id)))}),
	'0', 'every stored entity was named by an accepted call: rejected calls changed nothing');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable_cluster.entity_state
 WHERE (state ->> 'balance')::numeric < 0 OR revision < 1}),
	'0', 'no balance is negative, no revision below 1');

# the commands sent at commit were all taken up: none is left pending
ok(DurableClusterLoad::poll_until($node, q{
SELECT count(*) FROM durable_cluster.pending_commands WHERE status = 'pending'},
		expected => '0', timeout => 60),
	'every accepted command sent at commit was sent on');
is($node->safe_psql('postgres', $pids_query), $pids_before,
	'the nodes are the same processes as before');
ok(DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(2), timeout => 30),
	'both nodes are up and own every shard');
is($node->safe_psql('postgres',
		q{SELECT dc.send_command('fz_after', 'u1', 'login') ->> 'result'}),
	'logged_in', 'a command is served after the fuzzing');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|was terminated|PANIC/, 'no process crashed');

$node->stop;
done_testing();
