#
# test/t/007_idempotent_retries.pl
#     A command sent with a command_id is applied once, whoever receives the
#     retry: the node that applied it, the node that took its shard over
#     after a failover, or any node after a crash restart.  Under load,
#     writers that retry a command once with its command_id when it fails
#     get every command acknowledged exactly once, across a node paused in
#     the middle of a batch (the case where, without command ids, a caller
#     is told 40003 "may or may not have been applied").
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('retries', 3, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.ask_timeout = '20s'
});

my $add = q{SELECT dc.send_command('shop', 'buyer', 'add_balance',
                                   '{"amount": 10, "command_id": "pay-1"}')};
my $first = $node->safe_psql('postgres', $add);
like($first, qr/"revision": 1\b/, 'the command was applied (revision 1)');
my ($owner) = $first =~ /"node": "([^"]+)"/;

# the retry, at the same node
is($node->safe_psql('postgres', $add), $first, 'a retry gets the original reply');

# the owner fails; its shards go to the others; the retry reaches a new owner
my $victim = DurableClusterLoad::member($node, $owner);
ok(DurableClusterLoad::pause_node($node, $victim->{pid}), "stopped $owner, the owner");
my ($ok) = DurableClusterLoad::poll_until($node, qq{
SELECT node IS DISTINCT FROM '$owner' AND node IS NOT NULL
  FROM dc.shards WHERE shard_id = dc.shard_id('shop', 'buyer')}, timeout => 60);
ok($ok, 'the shard moved to another node');
is($node->safe_psql('postgres', $add), $first,
	'after the failover the new owner answers the retry with the original reply');
kill('CONT', $victim->{pid});

# a crash restart: the log is as durable as the state
$node->stop('immediate');
$node->start;
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(3),
	timeout => 60);
ok($ok, 'the cluster came back after the crash');
is($node->safe_psql('postgres', $add), $first, 'after a crash restart: the original reply');

is($node->safe_psql('postgres', q{
SELECT (state ->> 'balance') || ' ' || revision FROM durable_cluster.entity_state
 WHERE mall_id = 'shop' AND user_id = 'buyer'}),
	'10.00 1', 'stored: the amount added once, revision 1');

# a new command_id is a new command
like($node->safe_psql('postgres', q{SELECT dc.send_command('shop', 'buyer', 'add_balance',
                                   '{"amount": 10, "command_id": "pay-2"}')}),
	qr/"revision": 2\b/, 'another command_id is applied (revision 2)');

# Under load, with retries.  A short ask_timeout for the writers' sessions,
# so that the callers of a paused node's batch give up (40003) and retry.
$node->safe_psql('postgres', q{
ALTER SYSTEM SET durable_cluster.ask_timeout = '3s';
SELECT pg_reload_conf()});
DurableClusterLoad::poll_until($node,
	q{SELECT current_setting('durable_cluster.ask_timeout') = '3s'});
my $load = DurableClusterLoad->start($node, name => 'retry', clients => 4, entities => 20,
	retry => 1);
ok($load->wait_for_progress(200), 'retrying writers are under way');

# Hold every batch in the store (table locked), pause a node whose batch
# waits there, release: its callers get no reply.  The batch waits in the
# node itself when it writes in process (then, continued, it finds its
# shards moved and commits nothing), or in its store session, which
# commits it while the node is paused.
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE durable_cluster.entity_state IN ACCESS EXCLUSIVE MODE');
my $paused = '';
my $deadline = time + 10;
while ($paused eq '' && time < $deadline)
{
	my ($r, $o) = $node->psql('postgres', q{
SELECT m.name FROM dc.members m JOIN pg_stat_activity a
    ON a.pid = m.pid OR a.application_name = 'durable_cluster ' || m.name
 WHERE m.status = 'up' AND a.wait_event_type = 'Lock'
 ORDER BY m.name LIMIT 1});
	$paused = $o // '' if $r == 0;
	usleep(10_000) if $paused eq '';
}
isnt($paused, '', "a node's batch waits in the store ($paused)");
my $member = DurableClusterLoad::member($node, $paused);
is(kill('STOP', $member->{pid}), 1, "paused $paused in the middle of its batch");
$locker->query_safe('COMMIT');
$locker->quit;

($ok) = DurableClusterLoad::poll_until($node,
	qq{SELECT status = 'down' FROM dc.members WHERE name = '$paused'}, timeout => 60);
ok($ok, "$paused was marked down and its shards moved");
ok($load->wait_for_progress(200), 'the writers went on without it');

# keep it paused until its callers gave up: a writer printed a failure
# (then retried)
my $gave_up = 0;
$deadline = time + 60;
while (!$gave_up && time < $deadline)
{
	for my $c (1 .. 4)
	{
		my $file = "$PostgreSQL::Test::Utils::tmp_check/dcload_retry_$c.out";
		$gave_up ||= (-e $file && slurp_file($file) =~ /^F\|/m);
	}
	usleep(50_000) unless $gave_up;
}
ok($gave_up, "callers of ${paused}'s batch gave up on it");
kill('CONT', $member->{pid});
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(3),
	timeout => 60);
ok($ok, "$paused rejoined");

$load->stop;
ok($load->clients_ok, 'every writer ran until it was told to stop');
$load->failures_ok('retry', max => 0);
cmp_ok($load->retried, '>', 0,
	'some commands failed at first (' . $load->retried . ') and were retried');
DurableClusterLoad::check_stored($node, 'retry', [$load]);

$node->stop;
done_testing();
