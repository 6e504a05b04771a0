#
# test/t/006_passivation.pl
#     Entities leave a node's memory when idle (passivate_idle_after) or
#     beyond max_entities_per_node, and come back from the store intact;
#     dc.node_stats counts it.
#
# Settings are short so that the test is quick: heartbeat_interval 100ms
# (idle entities are passivated at a node's tick), passivate_idle_after 1s,
# max_entities_per_node 10, with 90 entities over 3 nodes.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $entities = 90;

my $node = DurableClusterLoad::new_server('passivation', 3, qq{
durable_cluster.heartbeat_interval = '100ms'
durable_cluster.passivate_idle_after = '1s'
durable_cluster.max_entities_per_node = 10
});

# One add_balance of g cents per entity u<g>; returns how many replies were
# ok with the expected revision and balance.
sub add_round
{
	my ($round) = @_;
	return $node->safe_psql('postgres', qq{
SELECT count(*) FROM (
    SELECT g, dc.send_command('pas', 'u' || g, 'add_balance',
                              jsonb_build_object('amount', g / 100.0)) AS r
      FROM generate_series(1, $entities) g) s
 WHERE (r ->> 'ok')::boolean AND (r ->> 'revision')::int = $round
   AND (r -> 'state' ->> 'balance')::numeric = $round * g / 100.0});
}

$node->safe_psql('postgres', 'SELECT dc.stats_reset()');
is(add_round(1), $entities, 'round 1: every command applied once');

# Past max_entities_per_node the least recently used leave memory.
my ($ok) = DurableClusterLoad::poll_until($node, qq{
SELECT max(entities_in_memory) <= 10 AND sum(passivations) >= $entities - 30
       AND sum(commands) = $entities
  FROM dc.node_stats}, timeout => 30);
ok($ok, 'no node holds more than max_entities_per_node; the others were passivated');

# Idle entities leave memory after passivate_idle_after.
($ok) = DurableClusterLoad::poll_until($node,
	'SELECT sum(entities_in_memory) = 0 FROM dc.node_stats', timeout => 30);
ok($ok, 'after passivate_idle_after every entity left memory');

# The next command loads the stored state again: nothing was lost.
is(add_round(2), $entities, 'round 2: every entity continued from its stored state');
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM durable_cluster.entity_state
 WHERE mall_id = 'pas' AND revision = 2
   AND (state ->> 'balance')::numeric = 2 * substr(user_id, 2)::int / 100.0}),
	$entities, 'stored: revision 2 and both amounts for every entity');

($ok) = DurableClusterLoad::poll_until($node, qq{
SELECT sum(commands) = 2 * $entities AND sum(batches) > 0
       AND bool_and(avg_commands_per_batch >= 1) AND bool_and(last_batch_at IS NOT NULL)
  FROM dc.node_stats}, timeout => 30);
ok($ok, 'dc.node_stats counts the commands and batches of both rounds');

# passivate_idle_after = 0 keeps idle entities; wait for several ticks of
# every node (their heartbeats) and check nothing left memory.
$node->safe_psql('postgres', q{
ALTER SYSTEM SET durable_cluster.passivate_idle_after = 0;
SELECT pg_reload_conf()});
($ok) = DurableClusterLoad::poll_until($node,
	q{SELECT current_setting('durable_cluster.passivate_idle_after') = '0'});
$node->safe_psql('postgres', q{
SELECT dc.send_command('kept', 'k' || g, 'login') FROM generate_series(1, 5) g});
my $held = $node->safe_psql('postgres',
	'SELECT sum(entities_in_memory) FROM dc.node_stats');
cmp_ok($held, '>=', 5, 'the five entities are in memory');
my $since = $node->safe_psql('postgres', 'SELECT max(last_heartbeat) FROM dc.members');
($ok) = DurableClusterLoad::poll_until($node, qq{
SELECT min(last_heartbeat) > '$since'::timestamptz + interval '2 s' FROM dc.members});
ok($ok, 'every node ran its ticks for more than 2 s');
is($node->safe_psql('postgres', 'SELECT sum(entities_in_memory) FROM dc.node_stats'),
	$held, 'with passivate_idle_after = 0 no idle entity left memory');

# dc.stats_reset is for superusers and dc_admin
$node->safe_psql('postgres', 'CREATE ROLE plain LOGIN');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT dc.stats_reset()',
	extra_params => [ '-U', 'plain' ]);
like($err, qr/permission denied for function stats_reset/,
	'a plain role may not reset the statistics');
$node->safe_psql('postgres', 'SELECT dc.stats_reset()');
is($node->safe_psql('postgres', q{
SELECT sum(commands) || ' ' || sum(batches) || ' ' || sum(passivations) FROM dc.node_stats}),
	'0 0 0', 'dc.stats_reset zeroes the counters');

$node->stop;
done_testing();
