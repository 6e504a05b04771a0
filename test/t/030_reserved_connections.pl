#
# test/t/030_reserved_connections.pl
#     The cluster keeps its connections: the nodes' store sessions are cut
#     (the nodes paused meanwhile) and a role with no grants takes every free
#     connection slot, theirs too.  The nodes connect again through
#     reserved_connections, which dc_cluster may use (CREATE EXTENSION grants
#     it pg_use_reserved_connections), and the cluster keeps serving.
#     Without that grant they cannot, which the test shows too, and with it
#     back they return.
#
#     PostgreSQL 16 brought reserved_connections; on 15 the test skips
#     (the server warns at start that it cannot keep slots for the cluster).
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my ($major) = `pg_config --version` =~ /PostgreSQL (\d+)/;
plan skip_all => "PostgreSQL $major cannot reserve connection slots for a role that is no superuser (reserved_connections came with 16); the server warns at start instead"
  if $major < 16;

my $node = DurableClusterLoad::new_server('reserved', 3, q{
max_connections = 20
superuser_reserved_connections = 3
reserved_connections = 4
durable_cluster.max_nodes = 4
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
});
unlike(slurp_file($node->logfile), qr/reserved_connections \(\d+\) keeps fewer/,
	'no warning: reserved_connections covers durable_cluster.max_nodes');
is($node->safe_psql('postgres', q{
SELECT pg_has_role('dc_cluster', 'pg_use_reserved_connections', 'USAGE')}),
	't', 'dc_cluster may use the reserved slots');

my $store_sessions = q{
SELECT count(*) FROM pg_stat_activity WHERE usename = 'dc_cluster' AND backend_type = 'client backend'};
my $serving = q{SELECT dc.send_command('reserved', 'u1', 'get_state') ->> 'result'};
my @node_pids = split /\n/, $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'durable_cluster node' ORDER BY pid});
is(scalar(@node_pids), 3, 'three nodes run');

# Cut the nodes' store sessions while the nodes are paused, so that they
# look for a slot only once the test lets them.
sub cut_store_sessions
{
	kill 'STOP', @node_pids;
	$node->safe_psql('postgres', q{
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE usename = 'dc_cluster' AND backend_type = 'client backend'});
	return $node->poll_query_until('postgres', "SELECT ($store_sessions) = 0");
}

# a role with no grants takes every slot that is not reserved, the nodes'
# among them.  The test's own sessions take one now and then until they
# end (a superuser's takes a reserved one only when no other is left), so
# a holder refused meanwhile is started again.
ok(cut_store_sessions(), 'the nodes are paused and their store sessions cut');
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
my $slots = $node->safe_psql('postgres', q{
SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
       - current_setting('reserved_connections')::int});
my @holders;
my $holding = 0;
my $deadline = time() + 60;
while (time() < $deadline)
{
	$holding = $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE usename = 'nobody'});
	last if $holding == $slots;
	@holders = grep { $_->pumpable } @holders;
	for (scalar(@holders) + 1 .. $slots)
	{
		my ($in, $out, $err) = ('', '', '');
		push @holders, IPC::Run::start(
			[ $node->installed_command('psql'), '-XAtq', '-d', $node->connstr('postgres') . ' user=nobody',
			  '-c', 'SELECT pg_sleep(600)' ],
			\$in, \$out, \$err);
	}
	usleep(200_000);
}
is($holding, $slots, "a role with no grants holds all $slots slots that are not reserved");
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT 1', extra_params => [ '-U', 'nobody' ]);
like($err, qr/remaining connection slots are reserved/, 'no slot is left for it or anyone like it');

# the nodes go on: they connect again through the reserved slots
kill 'CONT', @node_pids;
ok($node->poll_query_until('postgres', "SELECT ($store_sessions) = 3"),
	'the nodes connected again, through the reserved slots');
ok(DurableClusterLoad::poll_until($node, $serving, expected => 'state'),
	'and the cluster serves');

# without the grant they could not
$node->safe_psql('postgres', 'REVOKE pg_use_reserved_connections FROM dc_cluster');
ok(cut_store_sessions(), 'without pg_use_reserved_connections, the nodes paused and cut again');
my $offset = -s $node->logfile;
kill 'CONT', @node_pids;
ok( eval {
		$node->wait_for_log(
			qr/FATAL:  remaining connection slots are reserved for roles with privileges of the "pg_use_reserved_connections" role/,
			$offset);
	},
	'the nodes cannot connect again');
is($node->safe_psql('postgres', $store_sessions), '0', 'none did');
$node->safe_psql('postgres', 'GRANT pg_use_reserved_connections TO dc_cluster WITH INHERIT TRUE');
ok($node->poll_query_until('postgres', "SELECT ($store_sessions) = 3"),
	'with it back, they do');
ok(DurableClusterLoad::poll_until($node, $serving, expected => 'state'),
	'and the cluster serves again');

$_->kill_kill for @holders;
$node->stop;
done_testing();
