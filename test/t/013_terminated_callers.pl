#
# test/t/013_terminated_callers.pl
#     A caller terminated while it waits for its reply (pg_terminate_backend,
#     as poolers, idle_session_timeout and operators do) gives its request
#     slot back, however its backend ends.  500 callers are terminated while
#     their commands wait in the inbox of a paused node -- more than the
#     server has request slots -- and then a normal command is served.
#     None of the terminated commands was applied: they had not reached the
#     node.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('terminated', 1, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '10min'
durable_cluster.ask_timeout = '10min'
max_connections = 100
});

my $slots = 2 * ($node->safe_psql('postgres', q{
SELECT current_setting('max_connections')::int + current_setting('max_worker_processes')::int
       + current_setting('autovacuum_max_workers')::int + current_setting('max_wal_senders')::int + 1
}) + 0) + 16;
note("about $slots request slots");

my $owner = DurableClusterLoad::member($node, 'node-1');
ok(DurableClusterLoad::pause_node($node, $owner->{pid}), 'paused the only node');

my $waiting = q{SELECT count(*) FROM pg_stat_activity
 WHERE query LIKE 'SELECT dc.send_command(''term''%' AND pid <> pg_backend_pid()};
my $terminated = 0;
my $rounds_ok = 1;
for my $round (1 .. 10)
{
	my @callers;
	for my $c (1 .. 50)
	{
		my ($out, $err) = ('', '');
		push @callers, IPC::Run::start(
			[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'),
			  '-c', qq{SELECT dc.send_command('term', 'u$c', 'add_balance', '{"amount": 1}')} ],
			'>', \$out, '2>', \$err);
	}
	my ($all) = DurableClusterLoad::poll_until($node, "SELECT ($waiting) = 50", timeout => 60);
	$rounds_ok &&= $all;
	$terminated += $node->safe_psql('postgres', qq{
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE query LIKE 'SELECT dc.send_command(''term''%' AND pid <> pg_backend_pid()});
	$_->finish for @callers;
	DurableClusterLoad::poll_until($node, "SELECT ($waiting) = 0", timeout => 60);
}
ok($rounds_ok, 'every round had its 50 callers waiting');
is($terminated, 500, '500 waiting callers were terminated');
cmp_ok($terminated, '>', $slots, 'more callers than the server has request slots');

is(kill('CONT', $owner->{pid}), 1, 'resumed the node');
like($node->safe_psql('postgres',
		q{SET durable_cluster.ask_timeout = '20s';
		  SELECT dc.send_command('term', 'after', 'add_balance', '{"amount": 7}') ->> 'result'}),
	qr/^balance_added$/, 'a normal command is served after 500 terminated callers');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM durable_cluster.entity_state WHERE mall_id = 'term' AND user_id <> 'after'}),
	'0', 'none of the terminated commands was applied: they never reached the node');

# and many at once still find slots
my $many = $node->safe_psql('postgres', q{
SELECT count(*) FROM generate_series(1, 300) i,
       LATERAL dc.send_command('term', 'after', 'login') r WHERE r ->> 'result' = 'logged_in'});
is($many, '300', '300 commands in a row after that all find a slot');

$node->stop;
done_testing();
