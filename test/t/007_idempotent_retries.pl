#
# test/t/007_idempotent_retries.pl
#     A command sent with a command_id is applied once, whoever receives the
#     retry: the node that applied it, the node that took its shard over
#     after a failover, or any node after a crash restart.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('retries', 3, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.ask_timeout = '20s'
});

my $add = q{SELECT dc_send_command('shop', 'buyer', 'add_balance',
                                   '{"amount": 10, "command_id": "pay-1"}')};
my $first = $node->safe_psql('postgres', $add);
like($first, qr/"revision": 1\b/, 'the command was applied (revision 1)');
my ($owner) = $first =~ /"node": "([^"]+)"/;

# the retry, at the same node
is($node->safe_psql('postgres', $add), $first, 'a retry gets the original reply');

# the owner fails; its shards go to the others; the retry reaches a new owner
my $victim = DurableClusterLoad::member($node, $owner);
is(kill('STOP', $victim->{pid}), 1, "stopped $owner, the owner");
my ($ok) = DurableClusterLoad::poll_until($node, qq{
SELECT node IS DISTINCT FROM '$owner' AND node IS NOT NULL
  FROM dc_shards WHERE shard_id = dc_shard_id('shop', 'buyer')}, timeout => 60);
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
like($node->safe_psql('postgres', q{SELECT dc_send_command('shop', 'buyer', 'add_balance',
                                   '{"amount": 10, "command_id": "pay-2"}')}),
	qr/"revision": 2\b/, 'another command_id is applied (revision 2)');

$node->stop;
done_testing();
