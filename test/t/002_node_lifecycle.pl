#
# test/t/002_node_lifecycle.pl
#     How node workers come and go, and what callers see when they cannot
#     be served:
#
#   - without shared_preload_libraries every SQL function refuses to run
#     and its hint says how to fix it;
#   - with durable_cluster.nodes = 0 a command fails after ask_timeout with
#     a clear error instead of hanging;
#   - nodes wait quietly for CREATE EXTENSION, go quiet again after DROP
#     EXTENSION and serve a re-created extension;
#   - a node worker that exits is restarted and joins as a new incarnation,
#     and no acknowledged state is lost;
#   - a caller cancelled by pg_cancel_backend while it waits leaves the
#     node and its inbox healthy.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

# ---------------------------------------------------------------------------
# Loaded without shared_preload_libraries.
# ---------------------------------------------------------------------------
my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
foreach my $call (
	q{SELECT dc.send_command('mall001', 'user001', 'login')},
	q{SELECT dc.get_state('mall001', 'user001')})
{
	my ($ret, $out, $err) = $plain->psql('postgres', $call);
	isnt($ret, 0, "not preloaded: $call fails");
	like($err, qr/must be loaded via shared_preload_libraries/,
		'not preloaded: the error names the problem');
	like($err,
		qr/HINT:\s+Add durable_cluster to shared_preload_libraries in postgresql.conf and restart the server/,
		'not preloaded: the hint says how to fix it');
}
$plain->stop;

# ---------------------------------------------------------------------------
# No node at all: a command fails after ask_timeout.
# ---------------------------------------------------------------------------
my $empty = PostgreSQL::Test::Cluster->new('no_nodes');
$empty->init;
$empty->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
durable_cluster.nodes = 0
});
$empty->start;
$empty->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
{
	my $start = time();
	my ($ret, $out, $err) = $empty->psql('postgres', q{
SET durable_cluster.ask_timeout = '700ms';
SELECT dc.send_command('mall001', 'user001', 'login');
}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	my $elapsed = time() - $start;
	isnt($ret, 0, 'no nodes: the command fails');
	like($err, qr/ERROR:\s+55000: no durable_cluster node is serving/,
		'no nodes: SQLSTATE 55000 and a message saying nobody serves');
	cmp_ok($elapsed, '>=', 0.7, 'no nodes: it waited ask_timeout first');
	is($empty->safe_psql('postgres', 'SELECT count(*) FROM durable_cluster.entity_state'),
		'0', 'no nodes: nothing stored');
}
$empty->stop;

# ---------------------------------------------------------------------------
# A server with three nodes.
# ---------------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('lifecycle');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
max_worker_processes = 32
durable_cluster.heartbeat_interval = '200ms'
});
$node->start;

my $ready_query = q{
SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = 3
   AND (SELECT count(*) FROM dc.shards s JOIN dc.members m ON m.name = s.node
         WHERE m.status = 'up') = 100};

# Nodes run, and wait without a word, before the extension exists.
$node->poll_query_until('postgres', q{
SELECT count(*) = 3 FROM pg_stat_activity
 WHERE backend_type = 'durable_cluster node'})
  or die 'node workers did not start';
my $log_offset = -s $node->logfile;

$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
$node->poll_query_until('postgres', $ready_query)
  or die 'nodes did not join after CREATE EXTENSION';
my $log = slurp_file($node->logfile, 0);
unlike(substr($log, 0, $log_offset), qr/durable_cluster.*(ERROR|WARNING|failed)/,
	'nodes waited for CREATE EXTENSION without errors');
is($node->safe_psql('postgres', q{SELECT dc.send_command('mall001', 'user001', 'login')->>'revision'}),
	'1', 'commands are served after CREATE EXTENSION');

# DROP EXTENSION: the nodes go quiet; a new extension is served afresh.
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'DROP EXTENSION durable_cluster');
$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
$node->poll_query_until('postgres', $ready_query)
  or die 'nodes did not rejoin a re-created extension';
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT incarnation::text, ',') FROM dc.members}),
	'1', 're-created extension: nodes joined its new members table');
is($node->safe_psql('postgres', q{SELECT dc.send_command('mall001', 'user001', 'login')->>'revision'}),
	'1', 're-created extension: entities start over');
# A statement a node's store session had begun when DROP EXTENSION
# committed fails there with "does not exist" (the store logs it); the node
# sees the extension gone and says nothing.  Anything else is an error.
$log = slurp_file($node->logfile, $log_offset);
my @complaints = grep { !/ERROR:\s+(relation|function|schema|type) "[^"]*" does not exist/ }
  grep { /durable_cluster.*(ERROR|failed)/ } split /\n/, $log;
is(join("\n", @complaints), '', 'DROP and CREATE EXTENSION caused no node errors');

# A node worker that exits is restarted as a new incarnation.
$node->safe_psql('postgres', q{
SELECT dc.send_command('mall001', 'user001', 'add_balance', '{"amount": 12.34}')});
my $owner = $node->safe_psql('postgres',
	q{SELECT node FROM dc.shards WHERE shard_id = dc.shard_id('mall001', 'user001')});
my $old_pid = $node->safe_psql('postgres', "SELECT pid FROM dc.members WHERE name = '$owner'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
$node->poll_query_until('postgres', qq{
SELECT incarnation = 2 AND status = 'up' AND pid <> $old_pid
  FROM dc.members WHERE name = '$owner'})
  or die "$owner did not come back as incarnation 2";
$node->poll_query_until('postgres', $ready_query)
  or die 'shards were not all served after the restart';
# The worker left on SIGTERM and rejoined: the rebalance that followed may
# have given the entity's shard to another node, which must serve it.
is($node->safe_psql('postgres', q{
SELECT (r->>'node' = (SELECT node FROM dc.shards WHERE shard_id = (r->>'shard')::int))
       || ' ' || (r->>'revision') || ' ' || (r->'state'->>'balance')
  FROM dc.send_command('mall001', 'user001', 'get_state') r}),
	"true 2 12.34", 'the shard\'s current owner serves the stored state');
is($node->safe_psql('postgres', q{
SELECT dc.send_command('mall001', 'user001', 'add_balance', '{"amount": 1}')->>'revision'}),
	'3', 'and continues from the stored revision');

# pg_cancel_backend on a waiting caller.  A lock on the state table holds
# the node up so that the caller is surely waiting when it is cancelled.
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE durable_cluster.entity_state IN ACCESS EXCLUSIVE MODE');
my $caller = $node->background_psql('postgres', on_error_stop => 0);
$caller->query_until(qr/sent/, q{
\echo sent
SELECT dc.send_command('mall001', 'user001', 'add_balance', '{"amount": 5}');
});
$node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE query LIKE '%dc.send_command%' AND wait_event = 'Extension'
   AND pid <> pg_backend_pid()})
  or die 'the caller never waited for its reply';
$node->safe_psql('postgres', q{
SELECT pg_cancel_backend(pid) FROM pg_stat_activity
 WHERE query LIKE '%dc.send_command%' AND wait_event = 'Extension' AND pid <> pg_backend_pid()});
$caller->query('SELECT 1');
like($caller->{stderr}, qr/canceling statement due to user request/,
	'the waiting caller was cancelled');
$caller->{stderr} = '';
$locker->query_safe('COMMIT');
$locker->quit;

# The cancelled command had reached the node; it may commit (it does here,
# once the lock is gone).  The same session and others are served normally.
is($caller->query_safe(q{SELECT dc.send_command('mall001', 'user001', 'get_state')->>'revision'}),
	'4', 'the cancelled command was applied once, after the lock went away');
is($caller->query_safe(q{
SELECT count(*) FILTER (WHERE (r->>'ok')::boolean)
  FROM generate_series(1, 100) g,
       LATERAL dc.send_command('mall001', 'user' || g, 'login') r}),
	'100', 'after the cancel, 100 more commands are served');
$caller->quit;

$node->stop;
done_testing();
