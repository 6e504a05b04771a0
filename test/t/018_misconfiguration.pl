#
# test/t/018_misconfiguration.pl
#     Misconfiguration is loud.  Too few max_worker_processes for the nodes
#     and the saga worker: a WARNING at start that says how many are
#     needed, the saga worker still runs (it is registered first), and
#     dc.cluster_status() names the nodes that do not.  More nodes than
#     max_nodes: the server refuses to start, with a hint.  An ask_timeout
#     that cannot ride through a failover: a WARNING at start and reload.
#     A schema beside the API where others can create objects (public,
#     writable by PUBLIC as before PostgreSQL 15): a WARNING at CREATE
#     EXTENSION and from the saga worker, and dc.cluster_status() says so.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = PostgreSQL::Test::Cluster->new('few_workers');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
durable_cluster.nodes = 4
max_worker_processes = 3
durable_cluster.heartbeat_interval = '200ms'
});
$node->start;
my $log = slurp_file($node->logfile);
like($log, qr/WARNING:  durable_cluster needs 5 background workers \(4 nodes and the saga worker\), but max_worker_processes is 3/,
	'a WARNING at start says how many workers are needed');
like($log, qr/HINT:  Raise max_worker_processes to at least 5/, 'and which setting to raise');

$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
ok(DurableClusterLoad::poll_until($node, q{
SELECT count(*) > 0 FROM dc.members WHERE status = 'up'}, timeout => 60),
	'the nodes that fit joined');
my $missing = $node->safe_psql('postgres', q{SELECT dc.cluster_status() -> 'missing_workers'});
like($missing, qr/"node-4"/, "dc.cluster_status() lists the nodes that do not run: $missing");
unlike($missing, qr/sagas/, 'the saga worker runs: it is registered first');
$node->stop;

# an ask_timeout that cannot ride through a failover: a WARNING at start
# and again at a reload that keeps it so
my $short = PostgreSQL::Test::Cluster->new('short_ask');
$short->init;
$short->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
durable_cluster.nodes = 1
durable_cluster.ask_timeout = '3s'
});
$short->start;
$log = slurp_file($short->logfile);
like($log, qr/WARNING:  durable_cluster.ask_timeout \(3000 ms\) is not longer than a failover \(failure_timeout \+ 2 \* heartbeat_interval = 7000 ms\)/,
	'an ask_timeout shorter than a failover: a WARNING at start');
like($log, qr/HINT:  Set durable_cluster.ask_timeout above 7000 ms/, 'with what to set');
$short->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
my $offset = -s $short->logfile;
$short->append_conf('postgresql.conf', "durable_cluster.failure_timeout = '10s'\n");
$short->reload;
ok(DurableClusterLoad::poll_until($short, q{SELECT 1}, expected => '1'), 'reloaded');
my $deadline = time + 30;
until (slurp_file($short->logfile, $offset) =~ /is not longer than a failover \(failure_timeout \+ 2 \* heartbeat_interval = 12000 ms\)/
	  || time > $deadline)
{
	sleep 1;
}
like(slurp_file($short->logfile, $offset),
	qr/is not longer than a failover \(failure_timeout \+ 2 \* heartbeat_interval = 12000 ms\)/,
	'and again after a reload, by the saga worker');
$short->stop;

# public writable by all, as in a database made before PostgreSQL 15
my $open = PostgreSQL::Test::Cluster->new('open_public');
$open->init;
$open->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
durable_cluster.nodes = 1
durable_cluster.heartbeat_interval = '200ms'
});
$open->start;
$open->safe_psql('postgres', 'GRANT CREATE ON SCHEMA public TO PUBLIC');
$offset = -s $open->logfile;
my ($ret, $out, $err) = $open->psql('postgres', 'CREATE EXTENSION durable_cluster');
is($ret, 0, 'CREATE EXTENSION succeeds where others can create objects in public');
like($err, qr/WARNING:  roles other than its owner can create objects in schema public, which holds durable_cluster's API: PUBLIC/,
	'and warns, naming the schema and who');
like($err, qr/HINT:  REVOKE CREATE ON SCHEMA public FROM PUBLIC .*call the API as dc\.send_command/,
	'with what to do');
# once by the backend that created the extension, once by the saga worker
my $warning = qr/WARNING:  roles other than its owner can create objects in schema public/;
my @warnings;
$deadline = time + 30;
while ((@warnings = slurp_file($open->logfile, $offset) =~ /$warning/g) < 2 && time < $deadline)
{
	sleep 1;
}
cmp_ok(scalar(@warnings), '>=', 2, 'the saga worker says it in the log too');
is($open->safe_psql('postgres', q{SELECT dc.cluster_status() -> 'schemas_others_can_create_in'}),
	'{"public": "PUBLIC"}', 'and dc.cluster_status() lists it');
$open->safe_psql('postgres', 'REVOKE CREATE ON SCHEMA public FROM PUBLIC');
is($open->safe_psql('postgres', q{SELECT dc.cluster_status() -> 'schemas_others_can_create_in'}),
	'{}', 'until it is revoked');
$open->stop;

my $bad = PostgreSQL::Test::Cluster->new('too_many_nodes');
$bad->init;
$bad->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
durable_cluster.nodes = 20
durable_cluster.max_nodes = 16
});
ok(!$bad->start(fail_ok => 1), 'more nodes than max_nodes: the server does not start');
$log = slurp_file($bad->logfile);
like($log, qr/FATAL:  durable_cluster.nodes \(20\) is larger than durable_cluster.max_nodes \(16\)/,
	'it says why');
like($log, qr/HINT:  Raise durable_cluster.max_nodes or lower durable_cluster.nodes/, 'and how to fix it');

done_testing();
