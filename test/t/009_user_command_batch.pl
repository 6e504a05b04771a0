#
# test/t/009_user_command_batch.pl
#     A registered command's error fails only that command, also when it
#     shares a batch with others, for its own entity and for another one.
#
# The owner node is paused while four callers queue commands for two of
# its entities, so that it takes all four as one batch when it resumes:
# a good set_email and a login for u1, a set_email whose handler raises an
# error after writing for u1, and a good set_email for u2.  Only the
# failing one may fail, and nothing it wrote may stay.
#

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

# no failover while the owner is paused
my $node = DurableClusterLoad::new_server('user_batch', 3, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '120s'
durable_cluster.ask_timeout = '60s'
});

$node->safe_psql('postgres', q{
CREATE TABLE audit (user_id text, email text);
CREATE FUNCTION set_email(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.audit VALUES (state ->> 'user_id', payload ->> 'email');
    IF payload ? 'fail' THEN
        RAISE EXCEPTION 'refused %', payload ->> 'email' USING ERRCODE = 'check_violation';
    END IF;
    RETURN state || jsonb_build_object('email', payload ->> 'email');
END
$$;
SELECT dc.register_command('set_email', 'set_email(jsonb, jsonb)');
});

my $owner = $node->safe_psql('postgres',
	q{SELECT node FROM dc.shards WHERE shard_id = dc.shard_id('batch', 'u1')});
my $other = $node->safe_psql('postgres', qq{
SELECT 'u' || i FROM generate_series(2, 1000) i
 WHERE (SELECT node FROM dc.shards WHERE shard_id = dc.shard_id('batch', 'u' || i)) = '$owner'
 ORDER BY i LIMIT 1});
ok($other ne '', "$owner also owns ('batch', '$other')");

my $member = DurableClusterLoad::member($node, $owner);
ok(DurableClusterLoad::pause_node($node, $member->{pid}), "paused $owner");

my %commands = (
	good_u1 => q{SELECT dc.send_command('batch', 'u1', 'set_email', '{"email": "u1@example.com"}')},
	bad_u1 => q{SELECT dc.send_command('batch', 'u1', 'set_email', '{"email": "bad@example.com", "fail": true}')},
	login_u1 => q{SELECT dc.send_command('batch', 'u1', 'login')},
	good_other => qq{SELECT dc.send_command('batch', '$other', 'set_email', '{"email": "other\@example.com"}')},
);
my %runs;
for my $name (sort keys %commands)
{
	my %run = (out => '', err => '');
	$run{h} = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-v', 'VERBOSITY=verbose',
			'-d', $node->connstr('postgres'), '-c', $commands{$name}
		],
		'>', \$run{out}, '2>', \$run{err},
		IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
	$runs{$name} = \%run;
}

my ($ok) = DurableClusterLoad::poll_until($node, q{
SELECT count(*) = 4 FROM pg_stat_activity
 WHERE query LIKE 'SELECT dc.send_command(''batch''%' AND wait_event_type = 'Extension'});
ok($ok, "the four commands wait for $owner");
$node->safe_psql('postgres', 'SELECT dc.stats_reset()');
kill('CONT', $member->{pid});
$_->{h}->finish for values %runs;

for my $name (qw(good_u1 login_u1 good_other))
{
	like($runs{$name}{out}, qr/"ok": true/, "$name succeeded")
	  or diag($runs{$name}{err});
}
like($runs{bad_u1}{err}, qr/ERROR:\s+23514: refused bad\@example.com/,
	'the failing command got its handler\'s SQLSTATE and message');
is($runs{bad_u1}{out}, '', 'and no reply');

is($node->safe_psql('postgres',
	qq{SELECT commands || ' ' || batches FROM dc.node_stats WHERE node = '$owner'}),
	'4 1', 'the four commands were one batch');

is($node->safe_psql('postgres', q{
SELECT concat_ws(' ', r #>> '{state,email}', r #>> '{state,login_count}', r ->> 'revision')
  FROM dc.get_state('batch', 'u1') r}),
	'u1@example.com 1 2', 'u1: the good set_email and the login applied, the failed one not');
is($node->safe_psql('postgres', qq{
SELECT concat_ws(' ', r #>> '{state,email}', r ->> 'revision') FROM dc.get_state('batch', '$other') r}),
	'other@example.com 1', "$other: its command in the same batch applied");
is($node->safe_psql('postgres', q{SELECT string_agg(email, ',' ORDER BY email) FROM audit}),
	'other@example.com,u1@example.com',
	'what the failed handler wrote was undone; the others\' writes committed');

# the node's memory agrees with the store
like($node->safe_psql('postgres', q{SELECT dc.send_command('batch', 'u1', 'get_state')}),
	qr/"email": "u1\@example.com".*"revision": 2/, 'the owner holds the same state');

$node->stop;
done_testing();
