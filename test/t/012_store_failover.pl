#
# test/t/012_store_failover.pl
#     The store's own high availability is PostgreSQL's: a streaming
#     replica promoted when the store's primary is lost, and a multi-host
#     connection string with target_session_attrs=read-write.
#
# "primary" holds the store and runs two nodes; "standby" replicates it
# synchronously (its nodes start once it is promoted); "b" runs two nodes
# and reaches the store through
#     host=primary,standby ... target_session_attrs=read-write
# Writers send commands through b.  The primary is lost (immediate
# shutdown) and the standby promoted: b's nodes must reach the new primary,
# the shards must be shared by the nodes still running (b's and the new
# primary's), the writers must carry on, and every acknowledged command
# must be stored exactly once on the new primary.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

sub cluster_conf
{
	my ($node) = @_;
	return qq{
shared_preload_libraries = 'durable_cluster'
max_worker_processes = 32
durable_cluster.nodes = 2
durable_cluster.advertise_address = '} . $node->host . ':' . $node->port . qq{'
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.ask_timeout = '20s'
log_statement = 'ddl'
# (allows_streaming sets 10; the cluster's sessions are no superuser's, so
# the reserved ones do not serve them: nodes, forwarded commands, writers)
max_connections = 40
};
}

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', cluster_conf($primary));
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->append_conf('postgresql.conf', cluster_conf($standby));
$standby->start;
# acknowledged means on the standby too
$primary->append_conf('postgresql.conf', "synchronous_standby_names = '*'");
$primary->reload;
$primary->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_replication WHERE sync_state = 'sync'})
  or die 'the standby did not become synchronous';

# A node writing in its own process commits without waiting for the flush,
# let alone the standby: its caller waits, as a commit would, for what its
# synchronous_commit asks.  With the standby's replay paused, a caller
# asking for remote_apply is not answered (a cancel ends the wait with
# 40003) though the command is applied and committed on the primary; one
# asking for on (the standby's flush) is.  Sent again with its command_id
# once replay resumed, the first is answered from the log: applied once.
sub sync_command
{
	my ($user, $id) = @_;
	return qq{SELECT dc.send_command('sync', '$user', 'add_balance',
	                  '{"amount": "1.00", "command_id": "$id"}') ->> 'revision'};
}
$standby->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');
my ($rc, $out, $err) = $primary->psql('postgres',
	"\\set VERBOSITY verbose\nSET synchronous_commit = remote_apply;\nSET statement_timeout = '2s';\n"
	  . sync_command('u1', 's1'));
like($err, qr/ERROR:  40003: the wait for synchronous standbys to confirm the command ended before they did/,
	'replay paused on the standby: a caller asking for remote_apply is not answered, 40003 after a cancel');
is($primary->safe_psql('postgres',
		q{SELECT revision FROM durable_cluster.entity_state WHERE mall_id = 'sync' AND user_id = 'u1'}),
	'1', '... though the command was applied and committed on the primary');
is($primary->safe_psql('postgres', sync_command('u2', 's2')), '1',
	'a caller asking for the standby\'s flush only is answered meanwhile');
$standby->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
is($primary->safe_psql('postgres', "SET synchronous_commit = remote_apply;\n" . sync_command('u1', 's1')), '1',
	'once replay resumed, the command sent again is answered from the log, applied once');

my $b = PostgreSQL::Test::Cluster->new('b');
$b->init;
$b->append_conf('postgresql.conf', cluster_conf($b) . qq{
durable_cluster.store = 'host=} . $primary->host . ',' . $standby->host . ' port='
	  . $primary->port . ',' . $standby->port
	  . qq{ dbname=postgres target_session_attrs=read-write'
});
$b->start;
$b->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');

my ($ok) = DurableClusterLoad::poll_until($primary, DurableClusterLoad::balanced_query(4));
ok($ok, 'four nodes on primary and b share the shards');

my @loads = (DurableClusterLoad->start($b, name => 'via_b', mall => 'ha',
	clients => 3, entities => 40, retry => 1, pause_ms => 2));
my $progress = q{SELECT coalesce(sum(revision), 0) FROM durable_cluster.entity_state
                  WHERE mall_id = 'ha'};
my $before = $primary->safe_psql('postgres', $progress);
($ok) = DurableClusterLoad::poll_until($primary, "SELECT ($progress) >= $before + 300");
ok($ok, 'commands flow through b');

# the store's primary is lost; the standby takes over
$primary->stop('immediate');
$standby->promote;
# Right after the promotion the new primary still holds the membership it
# replicated: the lost primary's two nodes and b's two, "up" and balanced
# until failure_timeout passes.  So wait for four up nodes of which none is
# the lost primary's.
my $lost_address = $primary->host . ':' . $primary->port;
my $lost_owns = qq{
SELECT count(*) FROM dc.members m JOIN dc.shards s ON s.node = m.name
 WHERE m.address = '$lost_address'};
($ok) = DurableClusterLoad::poll_until($standby, DurableClusterLoad::balanced_query(4)
	. qq{ AND NOT EXISTS (SELECT FROM dc.members WHERE status = 'up' AND address = '$lost_address')},
	timeout => 60);
ok($ok, 'after the promotion, the nodes of b and of the new primary share the shards');
is($standby->safe_psql('postgres', $lost_owns), 0,
	'no shard is left with the lost primary\'s nodes');
$before = $standby->safe_psql('postgres', $progress);
($ok) = DurableClusterLoad::poll_until($standby, "SELECT ($progress) >= $before + 300",
	timeout => 60);
ok($ok, 'the writers on b carry on against the new primary');

push @loads, DurableClusterLoad->start($standby, name => 'via_new_primary', mall => 'ha',
	clients => 2, entities => 40, retry => 1, pause_ms => 2);
$before = $standby->safe_psql('postgres', $progress);
($ok) = DurableClusterLoad::poll_until($standby, "SELECT ($progress) >= $before + 200");
ok($ok, 'and commands flow through the new primary too');

$_->stop for @loads;
for my $load (@loads)
{
	ok($load->clients_ok, "$load->{name}: every writer ran until told to stop, with nothing unexpected");
	$load->failures_ok($load->{name}, allowed => [ '55000', '40003', qr/^(08|57)/ ]);
}
DurableClusterLoad::check_stored($standby, 'store failover', \@loads);

$_->stop for ($b, $standby);
done_testing();
