#
# test/t/030_reserved_connections.pl
#     The cluster keeps its connections: a role with no grants holds every
#     free connection slot, and the nodes' store sessions are cut.  The
#     nodes connect again through reserved_connections, which dc_cluster may
#     use (CREATE EXTENSION grants it pg_use_reserved_connections), and the
#     cluster keeps serving.  Without that grant they cannot, which the
#     test shows too, and with it back they return.
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
my $serving = q{SELECT dc.send_command('reserved', 'u' || g, 'get_state') ->> 'result'
                  FROM generate_series(1, 1) g};

# a role with no grants takes every slot that is free
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
my $free = $node->safe_psql('postgres', q{
SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
       - current_setting('reserved_connections')::int
       - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')});
my @holders;
for (1 .. $free)
{
	my ($in, $out, $err) = ('', '', '');
	push @holders, IPC::Run::start(
		[ $node->installed_command('psql'), '-XAtq', '-d', $node->connstr('postgres') . ' user=nobody',
		  '-c', 'SELECT pg_sleep(600)' ],
		\$in, \$out, \$err);
}
ok($node->poll_query_until('postgres',
		qq{SELECT count(*) = $free FROM pg_stat_activity WHERE usename = 'nobody'}),
	"a role with no grants holds all $free free slots");
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT 1', extra_params => [ '-U', 'nobody' ]);
like($err, qr/remaining connection slots are reserved/, 'no slot is left for it or anyone like it');

# the nodes' sessions are cut: they come back through the reserved slots
sub cut_store_sessions
{
	return $node->safe_psql('postgres', q{
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE usename = 'dc_cluster' AND backend_type = 'client backend'});
}
is(cut_store_sessions(), '3', 'the three nodes\' store sessions are cut');
ok($node->poll_query_until('postgres', "SELECT ($store_sessions) = 3"),
	'the nodes connected again');
ok(DurableClusterLoad::poll_until($node, $serving, expected => 'state'),
	'and the cluster serves');

# without the grant they could not: the slots held shut them out
$node->safe_psql('postgres', 'REVOKE pg_use_reserved_connections FROM dc_cluster');
my $offset = -s $node->logfile;
cut_store_sessions();
ok( eval {
		$node->wait_for_log(
			qr/FATAL:  remaining connection slots are reserved for roles with privileges of the "pg_use_reserved_connections" role/,
			$offset);
	},
	'without pg_use_reserved_connections the nodes cannot connect again');
is($node->safe_psql('postgres', $store_sessions), '0', 'none did');
$node->safe_psql('postgres', 'GRANT pg_use_reserved_connections TO dc_cluster WITH INHERIT TRUE');
ok($node->poll_query_until('postgres', "SELECT ($store_sessions) = 3"),
	'with it back, they do');
ok(DurableClusterLoad::poll_until($node, $serving, expected => 'state'),
	'and the cluster serves again');

$_->kill_kill for @holders;
$node->stop;
done_testing();
