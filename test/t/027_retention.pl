#
# test/t/027_retention.pl
#     What the store keeps, and for how long (retention.c, and the cap in
#     store_batch.c):
#
#       - the per-entity cap of the command log holds under 6 concurrent
#         clients whose every command has a command_id: each entity keeps
#         exactly its newest entries, a retry of one of them gets its
#         original reply, a retry of an evicted one is applied as new;
#       - by age: with a 4 s retention an entry still answers a retry a
#         second after it was logged, is gone no sooner than 4 s and soon
#         after, and a retry after that is applied as new;
#       - sagas: completed and compensated transfers are removed after
#         saga_retention, a running one (an old refund_rejected) never;
#       - dc.storage shows the tables' rows and sizes.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $cap = 10;
my $node = DurableClusterLoad::new_server('retention', 2, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.command_log_per_entity = $cap
durable_cluster.command_log_retention = '1h'
durable_cluster.saga_retention = '1h'
});

sub reload_with
{
	my ($setting, $value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $setting = '$value'; SELECT pg_reload_conf()");
	return;
}

# revision and balance of an entity
sub entity
{
	my ($mall, $user) = @_;
	return $node->safe_psql('postgres',
		"SELECT (r ->> 'revision') || ' ' || (r #>> '{state,balance}') FROM dc.get_state('$mall', '$user') r");
}

sub send_logged
{
	my ($mall, $user, $id) = @_;
	return $node->safe_psql('postgres', qq{
SELECT dc.send_command('$mall', '$user', 'add_balance', '{"amount": "1.00", "command_id": "$id"}')});
}

# ---- the cap, under concurrent clients ----
my $clients = 6;
my $per_client = 40;
my @entities = qw(e1 e2 e3);
my %sent;
my @runs;
for my $c (1 .. $clients)
{
	my $sql = '';
	for my $i (0 .. $per_client - 1)
	{
		my $user = $entities[ ($c + $i) % @entities ];
		$sql .= "SELECT dc.send_command('cap', '$user', 'add_balance',"
		  . " '{\"amount\": \"1.00\", \"command_id\": \"c$c-$i\"}') ->> 'ok';\n";
		$sent{$user}++;
	}
	push @runs, DurableClusterLoad::psql_script($node, $sql);
}
for my $run (@runs)
{
	$run->{h}->finish;
	is(($run->{h}->results)[0] . ' ' . ($run->{out} =~ tr/t//), "0 $per_client",
		'a client had all its commands applied') or diag($run->{err});
}
for my $user (@entities)
{
	is(entity('cap', $user), sprintf('%d %d.00', $sent{$user}, $sent{$user}),
		"$user: every command applied once");
	# the newest entries are those of the latest revisions
	is($node->safe_psql('postgres', qq{
SELECT count(*) || ' ' || min((reply ->> 'revision')::int) || '-' || max((reply ->> 'revision')::int)
  FROM durable_cluster.command_log WHERE mall_id = 'cap' AND user_id = '$user'}),
		sprintf('%d %d-%d', $cap, $sent{$user} - $cap + 1, $sent{$user}),
		"$user: the log holds its newest $cap entries, no more");
}

my ($kept_user, $kept_id, $kept_reply) = split /\|/, $node->safe_psql('postgres', q{
SELECT user_id, command_id, reply FROM durable_cluster.command_log
 WHERE mall_id = 'cap' ORDER BY seq DESC LIMIT 1});
my $before = entity('cap', $kept_user);
is(send_logged('cap', $kept_user, $kept_id), $kept_reply,
	'a retry of a kept command gets its original reply');
is(entity('cap', $kept_user), $before, 'and changes nothing');

# c1-0 went to e2, and client 1 alone sent e2 13 more after it
$before = entity('cap', 'e2');
my ($revision) = split / /, $before;
like(send_logged('cap', 'e2', 'c1-0'), qr/"revision": @{[ $revision + 1 ]}\b/,
	'a retry of a command evicted by the cap is applied as a new command (documented)');

# ---- by age ----
reload_with('durable_cluster.command_log_retention', '4s');
my $sent_at = time;
my $young = send_logged('age', 'u1', 'young');
# a second in: well inside the retention, and entries are never removed
# before it (checked below), so this retry must find its entry
ok(DurableClusterLoad::run_for($node, 1), 'a second passed');
is(send_logged('age', 'u1', 'young'), $young, 'inside the retention a retry gets the original reply');
is(entity('age', 'u1'), '1 1.00', 'and changes nothing');
my ($gone) = DurableClusterLoad::poll_until($node, q{
SELECT count(*) FROM durable_cluster.command_log WHERE command_id = 'young'},
	expected => '0', timeout => 60);
my $lived = time - $sent_at;
ok($gone, "the entry is removed after the retention (after ${lived}s)");
cmp_ok($lived, '>=', 4, 'not before 4 s');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable_cluster.command_log WHERE mall_id = 'cap'}),
	'0', 'older entries went too');
like(send_logged('age', 'u1', 'young'), qr/"revision": 2\b/,
	'a retry after the retention is applied as a new command (documented)');
is($node->safe_psql('postgres', q{SELECT count(*) <= 105 FROM durable_cluster.command_log_marks}),
	't', 'the marks of the log\'s age stay few');

# ---- sagas ----
$node->safe_psql('postgres', q{
SELECT dc.send_command('tr', 'alice', 'add_balance', '{"amount": 100}');
SELECT dc.transfer('tr', 'alice', 'tr', 'bob', 10) FROM generate_series(1, 3);
CREATE FUNCTION max_out(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state || '{"balance": 9999999999999999.99}' $$;
SELECT dc.register_command('max_out', 'max_out(jsonb, jsonb)');
SELECT dc.send_command('tr', 'rich', 'max_out');
SELECT dc.transfer('tr', 'alice', 'tr', 'rich', 10);
-- a refund that was rejected: running, for an operator, whatever its age
INSERT INTO durable_cluster.sagas (saga_id, from_mall, from_user, to_mall, to_user, amount,
                                   step, status, created_at, updated_at)
VALUES (nextval('durable_cluster.saga_seq'), 'tr', 'carol', 'tr', 'dave', 5,
        'refund_rejected', 'running', now() - interval '2 days', now() - interval '2 days');
});
is($node->safe_psql('postgres', q{
SELECT string_agg(status || ':' || n, ' ' ORDER BY status)
  FROM (SELECT status, count(*) n FROM durable_cluster.sagas GROUP BY status) s}),
	'compensated:1 completed:3 running:1', 'three transfers completed, one compensated, one stuck');
reload_with('durable_cluster.saga_retention', '2s');
ok(DurableClusterLoad::poll_until($node, q{
SELECT count(*) FROM durable_cluster.sagas WHERE status <> 'running'}, expected => '0',
		timeout => 60),
	'finished transfers are removed after saga_retention');
is($node->safe_psql('postgres', q{SELECT step || ' ' || status FROM durable_cluster.sagas}),
	'refund_rejected running', 'the running one stays');

# ---- sizes ----
$node->safe_psql('postgres', 'ANALYZE durable_cluster.entity_state');
is($node->safe_psql('postgres', q{
SELECT estimated_rows = (SELECT count(*) FROM durable_cluster.entity_state) AND total_bytes > 0
  FROM dc.storage WHERE table_name = 'entity_state'}),
	't', 'dc.storage shows the rows and size of a table');
is($node->safe_psql('postgres', q{
SELECT string_agg(table_name, ' ' ORDER BY table_name) FROM dc.storage
 WHERE table_name IN ('command_log', 'sagas', 'command_log_marks')}),
	'command_log command_log_marks sagas', 'including the command log and the sagas');

$node->stop;
done_testing();
