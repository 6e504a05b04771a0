#
# test/t/014_dump_restore.pl
#     pg_dump of a cluster's database, restored into a new server, keeps
#     the number of shards, the entity states, the command log and the
#     sagas; the restored cluster serves every entity from the shard it
#     was written to, answers a retry from the restored log, and goes on
#     from the restored revisions.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $conf = qq{
durable_cluster.heartbeat_interval = '200ms'
};
my $old = DurableClusterLoad::new_server('dump_old', 2, $conf);
$old->safe_psql('postgres', q{SELECT dc.set_number_of_shards(10)});
DurableClusterLoad::poll_until($old, DurableClusterLoad::balanced_query(2) . q{ AND (SELECT count(*) FROM dc.shards) = 10}, timeout => 60)
  or die 'the old cluster did not take 10 shards';

$old->safe_psql('postgres', q{
SELECT dc.send_command('m' || (i % 3), 'u' || i, 'add_balance',
                       jsonb_build_object('amount', i, 'command_id', 'pay-' || i))
  FROM generate_series(1, 40) i;
SELECT dc.send_command('m1', 'u1', 'update_profile', '{"nickname": "ann"}');
SELECT dc.transfer('m1', 'u4', 'm2', 'u5', 3);
});
my $states_query = q{
SELECT string_agg(format('%s/%s shard %s rev %s %s', mall_id, user_id, shard_id, revision,
                         state - 'last_event_time'), E'\n' ORDER BY mall_id, user_id)
  FROM durable_cluster.entity_state};
my $log_query = q{
SELECT count(*) || ' ' || md5(string_agg(mall_id || user_id || command_id || reply::text
                                        || request::text, ',' ORDER BY seq))
  FROM durable_cluster.command_log};
my $saga_query = q{
SELECT string_agg(format('%s %s/%s->%s/%s %s %s %s', saga_id, from_mall, from_user,
                         to_mall, to_user, amount, step, status), E'\n' ORDER BY saga_id)
  FROM durable_cluster.sagas};
my %before = map { $_ => $old->safe_psql('postgres', $_) }
  ($states_query, $log_query, $saga_query);

my $dump = $old->basedir . '/cluster.dump';
$old->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $old->connstr('postgres') ],
	'pg_dump of the cluster database');
$old->stop;

my $new = PostgreSQL::Test::Cluster->new('dump_new');
$new->init;
$new->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
max_worker_processes = 32
durable_cluster.nodes = 2
$conf
});
$new->start;
$new->command_ok([ 'pg_restore', '--exit-on-error', '-d', $new->connstr('postgres'), $dump ],
	'pg_restore into a new server, without errors');

is($new->safe_psql('postgres', q{SELECT number_of_shards FROM durable_cluster.settings}),
	'10', 'the number of shards is the dumped one');
ok(DurableClusterLoad::poll_until($new, DurableClusterLoad::balanced_query(2) . q{ AND (SELECT count(*) FROM dc.shards) = 10}, timeout => 60),
	'the restored cluster serves 10 shards');
is($new->safe_psql('postgres', $states_query), $before{$states_query},
	'entity states, revisions and shards are the dumped ones');
is($new->safe_psql('postgres', $log_query), $before{$log_query}, 'the command log is the dumped one');
is($new->safe_psql('postgres', $saga_query), $before{$saga_query}, 'the sagas are the dumped ones');
is($new->safe_psql('postgres', q{
SELECT count(*) FROM durable_cluster.entity_state
 WHERE shard_id <> dc.shard_id(mall_id, user_id)}),
	'0', 'every entity is in the shard its id hashes to');

like($new->safe_psql('postgres', q{
SELECT dc.send_command('m1', 'u7', 'add_balance', '{"amount": 7, "command_id": "pay-7"}')}),
	qr/"revision": 1\b/, 'a retry is answered from the restored log');
is($new->safe_psql('postgres', q{
SELECT dc.send_command('m1', 'u7', 'add_balance', '{"amount": 1}') -> 'state' ->> 'balance'}),
	'8.00', 'a new command goes on from the restored state');
is($new->safe_psql('postgres', q{SELECT dc.get_state('m1', 'u1') -> 'state' ->> 'nickname'}),
	'ann', 'dc.get_state reads restored states');

$new->stop;
done_testing();
