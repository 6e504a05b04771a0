#
# test/t/008_tell_rebalance.pl
#     Every dc.tell that returned is applied, also while shards move: a tell
#     accepted by a node whose batch then finds its shard gone is forwarded
#     by that node to the new owner (its caller has left).
#
# 1. pgbench clients send tells (add_balance of 0.01) while a node is added
#    and another removed; afterwards the stored balances must add up to
#    exactly the tells pgbench counted as done.
# 2. The forwarding itself, made certain: a session holds the shard's row
#    locked, so the node's batch waits in the store after the tell returned;
#    the session then moves the shard to a new epoch and the batch is
#    fenced.  The tell must still be applied.
#

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('tells', 3, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.ask_timeout = '20s'
});

my $script = "$PostgreSQL::Test::Utils::tmp_check/tells.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{\set u random(1, 50)
SELECT dc.tell('tellm', 'u' || :u, 'add_balance', '{"amount": 0.01}');
});
my ($out, $err) = ('', '');
my $pgbench = IPC::Run::start(
	[
		$node->installed_command('pgbench'), '-n', '-M', 'prepared', '-c', '4', '-j', '2',
		'-T', '8', '-f', $script, '-d', $node->connstr('postgres')
	],
	'>', \$out, '2>', \$err,
	IPC::Run::timeout(5 * $PostgreSQL::Test::Utils::timeout_default));

# tells are under way, then shards move twice
my ($ok) = DurableClusterLoad::poll_until($node, q{
SELECT count(*) >= 20 FROM durable_cluster.entity_state WHERE mall_id = 'tellm'});
ok($ok, 'tells are being applied');
my $added = $node->safe_psql('postgres', 'SELECT dc.add_node()');
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(4));
ok($ok, "$added joined and the shards were rebalanced under the tells");
$node->safe_psql('postgres', "SELECT dc.remove_node('node-2')");
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(3));
ok($ok, 'node-2 left and its shards moved under the tells');

$pgbench->finish;
my ($done) = $out =~ /number of transactions actually processed: (\d+)/;
ok(defined $done && $done > 0, 'pgbench ran its tells') or diag("$out\n$err");
unlike($out . $err, qr/number of failed transactions: [1-9]|aborted/, 'no tell failed');

# every tell that returned is applied, exactly once
($ok, undef, my $last) = DurableClusterLoad::poll_until($node, qq{
SELECT coalesce(sum((state ->> 'balance')::numeric), 0) = $done * 0.01
  FROM durable_cluster.entity_state WHERE mall_id = 'tellm'}, timeout => 60);
ok($ok, "the stored balances add up to the $done tells that returned");
is($node->safe_psql('postgres', q{
SELECT sum(revision) FROM durable_cluster.entity_state WHERE mall_id = 'tellm'}),
	$done, 'one revision per tell, none applied twice');

# 2. a batch fenced after its tell returned
my $shard = $node->safe_psql('postgres', q{SELECT dc.shard_id('tellm', 'fenced')});
my $holder = $node->background_psql('postgres');
$holder->query_safe(qq{BEGIN;
SELECT shard_id FROM durable_cluster.shards WHERE shard_id = $shard FOR UPDATE});
$node->safe_psql('postgres', q{SELECT dc.tell('tellm', 'fenced', 'login')});
pass('dc.tell returned while its batch waits for the shard row');
$holder->query_safe(qq{
UPDATE durable_cluster.shards SET epoch = epoch + 1 WHERE shard_id = $shard;
UPDATE durable_cluster.settings SET map_version = map_version + 1;
COMMIT});
$holder->quit;
($ok) = DurableClusterLoad::poll_until($node, q{
SELECT coalesce((dc.get_state('tellm', 'fenced') -> 'state' ->> 'logged_in')::boolean, false)},
	timeout => 60);
ok($ok, 'the tell fenced after it returned was forwarded and applied');
is($node->safe_psql('postgres', q{SELECT dc.get_state('tellm', 'fenced') -> 'revision'}),
	'1', 'applied once');

$node->stop;
done_testing();
