#
# test/t/011_multi_server.pl
#     A cluster over three servers of this machine: "store" holds the
#     cluster store, "b" and "c" reach it over libpq (durable_cluster.store);
#     each runs two nodes and is known to the others by its
#     durable_cluster.advertise_address.
#
# 1. Commands sent through any server reach the owner, wherever it runs
#    (forwarded over libpq); dc.get_state reads the store from every server;
#    registered commands and transfers work through a node server; a
#    restricted login is refused another mall through a node server after
#    SET ROLE, and its own commands are forwarded with every role it acts as.
# 2. Writers on all three servers (each command with a command_id, retried
#    once with it after a failure) while:
#    - server b is lost (immediate shutdown): its shards fail over to the
#      nodes of the other servers within failure_timeout + 2 s;
#    - b comes back: its nodes rejoin and the shards are rebalanced;
#    - the store restarts: the nodes of b and c reconnect and carry on.
#    Afterwards every acknowledged command is stored exactly once, and
#    nothing else is, but commands whose outcome nobody could know.
# 3. A tell fenced after it returned, whose shard moved to another server,
#    is forwarded there by the node; a server with a store elsewhere and no
#    advertise_address refuses to start.
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

my $failure_timeout = 2;

sub new_member_server
{
	my ($name, $store) = @_;
	return DurableClusterLoad::new_member_server($name, $store, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '${failure_timeout}s'
durable_cluster.ask_timeout = '20s'
});
}

my $store = new_member_server('store');
my $b = new_member_server('b', $store);
my $c = new_member_server('c', $store);
my %address = map { $_->name => $_->host . ':' . $_->port } ($store, $b, $c);

# the members, their shards and the map, as the store has them
my ($ok) = DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(6));
ok($ok, 'six nodes on three servers are up and share the shards');
is($store->safe_psql('postgres', q{
SELECT string_agg(DISTINCT address, ',' ORDER BY address) FROM dc.members WHERE status = 'up'}),
	join(',', sort values %address), 'members are known by their servers\' addresses');
like($store->safe_psql('postgres', q{SELECT string_agg(name, ',' ORDER BY name) FROM dc.members}),
	qr/^node-1\@.*node-2\@/, 'node names carry the server address (unique in the cluster)');

# 1. every server reaches every owner
for my $server ($store, $b, $c)
{
	my $nodes = $server->safe_psql('postgres', qq{
SELECT count(DISTINCT split_part(r ->> 'node', '\@', 2))
  FROM (SELECT dc.send_command('everywhere', 'u' || g, 'add_balance', '{"amount": 1}') AS r
          FROM generate_series(1, 60) g) s});
	is($nodes, 3, 'through ' . $server->name . ': commands were applied by nodes of all three servers');
}
is($c->safe_psql('postgres', q{
SELECT sum((dc.get_state('everywhere', 'u' || g) -> 'state' ->> 'balance')::numeric) FROM generate_series(1, 60) g}),
	'180.00', 'dc.get_state on a node server reads the store: three commands per entity');
is($store->safe_psql('postgres', q{
SELECT sum(revision) FROM durable_cluster.entity_state WHERE mall_id = 'everywhere'}),
	180, 'the store holds every one of them once');
my $told = $b->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT dc.tell('told', 'u' || g, 'login') FROM generate_series(1, 30) g) s});
($ok) = DurableClusterLoad::poll_until($store, q{
SELECT count(*) = 30 FROM durable_cluster.entity_state WHERE mall_id = 'told' AND revision = 1});
ok($ok, 'tells sent through a node server are applied');

# registered commands and transfers from a node server: the registry and
# the saga ids are the store's
$store->safe_psql('postgres', q{
CREATE FUNCTION set_tier(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state || jsonb_build_object('tier', payload ->> 'tier') $$;
SELECT dc.register_command('set_tier', 'set_tier(jsonb, jsonb)');
});
like($b->safe_psql('postgres',
		q{SELECT dc.send_command('everywhere', 'u1', 'set_tier', '{"tier": "gold"}')}),
	qr/"tier": "gold"/, 'a command registered on the store runs when sent through b');
my ($ret, $out, $err) = $b->psql('postgres',
	q{SELECT dc.register_command('other', 'jsonb_concat(jsonb, jsonb)')});
like($err, qr/commands are registered on the server that holds the cluster store/,
	'registering on a node server is refused');
like($c->safe_psql('postgres', q{SELECT dc.transfer('everywhere', 'u2', 'everywhere', 'u3', 1.5)}),
	qr/"status": "completed"/, 'a transfer through c completes');
is($store->safe_psql('postgres', q{
SELECT step || ' ' || status || ' ' || amount FROM dc.sagas WHERE from_user = 'u2'}),
	'added completed 1.50', 'its saga is recorded in the store');
is($c->safe_psql('postgres', q{
SELECT (dc.get_state('everywhere', 'u2') -> 'state' ->> 'balance') || ' ' || (dc.get_state('everywhere', 'u3') -> 'state' ->> 'balance')}),
	'1.50 4.50', 'and the amount moved once');
# a command sent at commit on a node server: recorded and sent on there,
# applied by whichever server's node owns the entity
is($b->safe_psql('postgres', q{
BEGIN;
SELECT dc.send_command_at_commit('everywhere', 'u4', 'add_balance', '{"amount": "2.25", "command_id": "b-commit"}');
COMMIT;}), 'b-commit', 'a command sent at commit through b');
ok(DurableClusterLoad::poll_until($b,
		q{SELECT dc.command_outcome('everywhere', 'u4', 'b-commit', 'add_balance', '{"amount": "2.25"}') ->> 'status'}, expected => 'done'),
	'b sent it on');
is($store->safe_psql('postgres', q{SELECT dc.get_state('everywhere', 'u4') #>> '{state,balance}'}),
	'5.25', 'and it was applied once');

# a restricted login stays restricted on a node server whatever role it
# becomes, and the roles it acts as travel with a forwarded command
for my $server ($store, $b)
{
	$server->safe_psql('postgres', q{CREATE ROLE mall_a_app LOGIN IN ROLE dc_client});
}
$store->safe_psql('postgres', q{SELECT dc.restrict_role('mall_a_app', '{mall_a}')});
my $as_tenant = q{SET SESSION AUTHORIZATION mall_a_app; SET ROLE dc_client;};
my $victim_state = q{SELECT dc.get_state('everywhere', 'u1') #- '{state,last_event_time}'};
my $victim_before = $store->safe_psql('postgres', $victim_state);
($ret, $out, $err) = $b->psql('postgres', $as_tenant . q{
SELECT dc.send_command('everywhere', 'u1', 'add_balance', '{"amount": 100}')});
like($err, qr/ERROR:  role "mall_a_app", which this request acts as, may not send "add_balance" to the entities of mall "everywhere"/,
	'through b, SET ROLE dc_client does not lift mall_a_app\'s restriction');
is($store->safe_psql('postgres', $victim_state), $victim_before, 'and nothing was applied');
my $elsewhere = $store->safe_psql('postgres', qq{
SELECT 'a' || g FROM generate_series(1, 1000) g
 WHERE (SELECT m.address FROM dc.shards s JOIN dc.members m ON m.name = s.node
         WHERE s.shard_id = dc.shard_id('mall_a', 'a' || g)) = '$address{store}'
 ORDER BY g LIMIT 1});
like($b->safe_psql('postgres', $as_tenant . qq{
SELECT dc.send_command('mall_a', '$elsewhere', 'login')}),
	qr/"node": "node-\d\@\Q$address{store}\E"/,
	'its own mall it reaches, forwarded to the store\'s node with both roles');

# 2. writers through all three servers
my %load_opts = (clients => 2, entities => 40, retry => 1, pause_ms => 2);
my @loads = map {
	DurableClusterLoad->start($_, name => 'ms_' . $_->name, mall => 'multi', %load_opts)
} ($store, $b, $c);
my $progress = q{SELECT coalesce(sum(revision), 0) FROM durable_cluster.entity_state
                  WHERE mall_id = 'multi'};
my $before = $store->safe_psql('postgres', $progress);
($ok) = DurableClusterLoad::poll_until($store, "SELECT ($progress) >= $before + 300");
ok($ok, 'the writers make progress');

# server b is lost
my $lost_at = time;
$b->stop('immediate');
($ok, my $took) = DurableClusterLoad::poll_until($store, qq{
SELECT count(*) = 0 FROM dc.shards s LEFT JOIN dc.members m ON m.name = s.node AND m.status = 'up'
 WHERE m.name IS NULL OR m.address = '$address{b}'}, since => $lost_at);
ok($ok, 'b\'s shards failed over to the nodes of store and c');
cmp_ok($took, '<=', $failure_timeout + 2, "within failure_timeout + 2 s (took ${took}s)");
$before = $store->safe_psql('postgres', $progress);
($ok) = DurableClusterLoad::poll_until($store, "SELECT ($progress) >= $before + 200");
ok($ok, 'the writers on store and c carry on without b');

# b comes back
$b->start;
($ok) = DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(6));
ok($ok, 'b\'s nodes rejoined and the shards were rebalanced');
push @loads, DurableClusterLoad->start($b, name => 'ms_b_again', mall => 'multi', %load_opts);
$before = $store->safe_psql('postgres', $progress);
($ok) = DurableClusterLoad::poll_until($store, "SELECT ($progress) >= $before + 200");
ok($ok, 'commands flow through b again');

# the store restarts
$store->restart;
($ok) = DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(6));
ok($ok, 'after the store restarted, the nodes of all servers are up again');
$before = $store->safe_psql('postgres', $progress);
($ok) = DurableClusterLoad::poll_until($store, "SELECT ($progress) >= $before + 200");
ok($ok, 'the writers on b and c carry on after the store restart');

$_->stop for @loads;
ok($loads[2]->clients_ok, 'the writers on c, whose server stayed up, ran until told to stop');
my $acked = 0;
$acked += $_->acked for @loads;
note("acknowledged commands: $acked");
for my $load (@loads)
{
	$load->failures_ok($load->{name}, allowed => [ '55000', '40003', qr/^(08|57)/ ]);
}
DurableClusterLoad::check_stored($store, 'three servers', \@loads, in_flight => 1);

# a tell whose batch is fenced after it returned, its shard having moved to
# a node of another server: the node forwards it to that server
my $fenced_user = $store->safe_psql('postgres', qq{
SELECT 'f' || g FROM generate_series(1, 1000) g
 WHERE (SELECT m.address FROM dc.shards s JOIN dc.members m ON m.name = s.node
         WHERE s.shard_id = dc.shard_id('fenced', 'f' || g)) = '$address{store}'
 ORDER BY g LIMIT 1});
my $shard = $store->safe_psql('postgres', qq{SELECT dc.shard_id('fenced', '$fenced_user')});
my $holder = $store->background_psql('postgres');
$holder->query_safe(qq{BEGIN;
SELECT shard_id FROM durable_cluster.shards WHERE shard_id = $shard FOR UPDATE});
$store->safe_psql('postgres', qq{SELECT dc.tell('fenced', '$fenced_user', 'login')});
pass('dc.tell returned while its batch waits for the shard row');
$holder->query_safe(qq{
UPDATE durable_cluster.shards SET node = 'node-1\@$address{c}', epoch = epoch + 1
 WHERE shard_id = $shard;
UPDATE durable_cluster.settings SET map_version = map_version + 1;
COMMIT});
$holder->quit;
($ok) = DurableClusterLoad::poll_until($store, qq{
SELECT coalesce((dc.get_state('fenced', '$fenced_user') -> 'state' ->> 'logged_in')::boolean, false)},
	timeout => 60);
ok($ok, 'the fenced tell was forwarded to the node of c and applied');
is($store->safe_psql('postgres', qq{SELECT dc.get_state('fenced', '$fenced_user') -> 'revision'}),
	'1', 'applied once');

# a server that reaches a store elsewhere must say how it is reached
my $nameless = PostgreSQL::Test::Cluster->new('nameless');
$nameless->init;
$nameless->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
durable_cluster.store = 'host=} . $store->host . ' port=' . $store->port . qq{ dbname=postgres'
});
ok(!$nameless->start(fail_ok => 1), 'a server with a store elsewhere and no advertise_address does not start');
like(slurp_file($nameless->logfile),
	qr/durable_cluster.store is set but durable_cluster.advertise_address is not/,
	'and says why');

$_->stop for ($c, $b, $store);
done_testing();
