#
# test/t/024_at_commit.pl
#     Commands inside the caller's transaction (dc.send_command_at_commit):
#
#       - a crash right after the commit, before the saga worker sent the
#         command on: after the crash restart it is applied, once;
#       - 8 clients, each running transactions that send a command at
#         commit and then commit or roll back (every third one): once
#         nothing is pending, every entity's balance and revision are
#         exactly those of the committed commands, and every rolled-back
#         command has no outcome;
#       - outcomes are removed after at_commit_retention (3 s here).
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('at_commit', 3, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.at_commit_retention = '3s'
# the postmaster must reinitialise after the saga worker is killed
restart_after_crash = on
});

# ---- commit, then a crash before the command was sent on ----
my $worker = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'durable_cluster sagas'});
like($worker, qr/^\d+$/, 'the saga worker runs');
kill 'STOP', $worker;
is($node->safe_psql('postgres', q{
BEGIN;
SELECT dc.send_command_at_commit('crash', 'u1', 'add_balance', '{"amount": "7.00", "command_id": "k1"}');
COMMIT;}), 'k1', 'a command sent at commit, committed');
is($node->safe_psql('postgres', q{SELECT dc.get_state('crash', 'u1') ->> 'revision'}), '0',
	'not applied yet: the worker is paused');
my $log_offset = -s $node->logfile;
kill 'KILL', $worker;
DurableClusterLoad::wait_for_crash_restart($node, $log_offset, 'saga worker killed');
ok(DurableClusterLoad::poll_until($node,
		q{SELECT dc.command_outcome('crash', 'u1', 'k1', 'add_balance', '{"amount": "7.00"}') ->> 'status'}, expected => 'done',
		timeout => 60),
	'after the crash restart the command was sent on');
is($node->safe_psql('postgres', q{
SELECT (dc.get_state('crash', 'u1') ->> 'revision') || ' ' || (dc.get_state('crash', 'u1') #>> '{state,balance}')}),
	'1 7.00', 'and applied once');

# ---- 8 clients, commits and rollbacks mixed ----
my $clients = 8;
my $per_client = 60;
my $entities = 10;
my (%expected_cents, %expected_revisions, @rolled_back);
my @runs;
for my $c (1 .. $clients)
{
	my $sql = '';
	for my $i (0 .. $per_client - 1)
	{
		my $user = 'u' . (($c * 3 + $i) % $entities);
		my $cents = 1 + ($c * 131 + $i * 17) % 997;
		my $amount = sprintf('%d.%02d', int($cents / 100), $cents % 100);
		my $id = "c$c-$i";
		my $commit = $i % 3 != 0;
		$sql .= "BEGIN;\n"
		  . "SELECT dc.send_command_at_commit('mixed', '$user', 'add_balance',"
		  . " '{\"amount\": \"$amount\", \"command_id\": \"$id\"}');\n"
		  . ($commit ? "COMMIT;\n" : "ROLLBACK;\n");
		if ($commit)
		{
			$expected_cents{$user} += $cents;
			$expected_revisions{$user}++;
		}
		else
		{
			push @rolled_back, [ $user, $id, $amount ];
		}
	}
	push @runs, DurableClusterLoad::psql_script($node, $sql);
}
for my $run (@runs)
{
	$run->{h}->finish;
	is(($run->{h}->results)[0], 0, "a client ran its transactions") or diag($run->{err});
}
ok(DurableClusterLoad::poll_until($node, q{
SELECT count(*) FROM durable_cluster.pending_commands WHERE status = 'pending'},
		expected => '0', timeout => 120),
	'every committed command was sent on');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM durable_cluster.pending_commands WHERE mall_id = 'mixed' AND status <> 'done'}),
	'0', 'none failed');

my $stored = $node->safe_psql('postgres', qq{
SELECT string_agg(u || ':' || (r ->> 'revision') || ':' || (r #>> '{state,balance}'), ',' ORDER BY u)
  FROM (SELECT 'u' || g AS u, dc.get_state('mixed', 'u' || g) AS r
          FROM generate_series(0, @{[ $entities - 1 ]}) g) s});
my $want = join(',', map {
	my $u = "u$_";
	sprintf('%s:%d:%d.%02d', $u, $expected_revisions{$u} // 0,
		int(($expected_cents{$u} // 0) / 100), ($expected_cents{$u} // 0) % 100)
} sort map { $_ } 0 .. $entities - 1);
is($stored, $want, 'balances and revisions are exactly those of the committed commands');
my $leaked = $node->safe_psql('postgres', join(' UNION ALL ',
		map { "SELECT 1 WHERE dc.command_outcome('mixed', '$_->[0]', '$_->[1]', 'add_balance', '{\"amount\": \"$_->[2]\"}') IS NOT NULL" }
		  @rolled_back[0 .. 19]));
is($leaked, '', 'rolled-back commands have no outcome');
ok(DurableClusterLoad::poll_until($node, q{
SELECT count(*) FROM durable_cluster.pending_commands}, expected => '0', timeout => 60),
	'after at_commit_retention the outcomes are removed');

$node->stop;
done_testing();
