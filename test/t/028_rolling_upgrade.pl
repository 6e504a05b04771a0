#
# test/t/028_rolling_upgrade.pl
#     The upgrade of a cluster of two servers from release 0.1 to the
#     version of this tree, step by step as CHANGELOG.md describes it, under
#     load:
#
#     1. Both servers run 0.1: "store" holds the store, "b" reaches it.
#        Writers send commands through b from here to step 3, each with a
#        command_id and retried once after a failure.
#     2. The new files are installed (renamed into place, as a package
#        does) and the store's server restarts: its nodes refuse the 0.1
#        SQL objects, its callers get 55000, b's 0.1 nodes take every
#        shard and go on writing to a store that now runs the new library.
#     3. ALTER EXTENSION UPDATE in the store database: the store's nodes
#        serve again beside b's 0.1 nodes, which write through 0.1's form
#        of write_batch while the store's write through the new one (both
#        counted by pg_stat_user_functions), or in their own process
#        (durable_cluster.store_in_process, counted by dc.node_stats);
#        commands, forwarded either way, and transfers between entities of
#        the two servers work.
#     4. Writers through the store start; b restarts (its shards fail over
#        to the store's nodes) and its database is updated: both servers
#        run the new version and serve, b's nodes writing through the new
#        form of write_batch.
#
#     Afterwards every acknowledged command is stored exactly once.  Both
#     servers run from one private installation
#     (DurableClusterLoad::install_release); 0.1 builds on PostgreSQL 15
#     only, so on 17 and 18 the test skips, saying so.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;
use Time::HiRes qw(time);

my $from = '0.1';
my ($major) = `pg_config --version` =~ /PostgreSQL (\d+)/;
plan skip_all => "release $from supports PostgreSQL 15 only; there is no $from to upgrade on $major"
  if $major != 15;

my $install = DurableClusterLoad::install_release($from);
my $conf = q{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.ask_timeout = '20s'
track_functions = 'all'
};
my $store = DurableClusterLoad::new_member_server('store', undef, $conf,
	install_path => $install->{path});
my $b = DurableClusterLoad::new_member_server('b', $store, $conf,
	install_path => $install->{path});
my %address = map { $_->name => $_->host . ':' . $_->port } ($store, $b);

sub versions
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT extversion FROM pg_extension WHERE extname = 'durable_cluster'});
}

# the shards held by up members of a server
sub shards_of
{
	my ($server) = @_;
	return qq{SELECT count(*) FROM dc_shards s JOIN dc_members m ON m.name = s.node
                   WHERE m.status = 'up' AND m.address = '$address{$server}'};
}

# calls of one form of durable_cluster.write_batch in the store
sub write_batch_calls
{
	my ($arguments) = @_;
	return qq{SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
               WHERE schemaname = 'durable_cluster' AND funcname = 'write_batch'
                 AND pg_get_function_identity_arguments(funcid) LIKE '$arguments%'};
}
my $old_form = write_batch_calls('node_name text, shards integer[]');
my $new_form = write_batch_calls('batch durable_cluster.batch');

my $progress = q{SELECT coalesce(sum(revision), 0) FROM durable_cluster.entity_state
                  WHERE mall_id = 'rolling'};
sub makes_progress
{
	my ($by, $what) = @_;
	my $before = $store->safe_psql('postgres', $progress);
	my ($ok) = DurableClusterLoad::poll_until($store, "SELECT ($progress) >= $before + $by");
	ok($ok, $what);
	return;
}

# ---------------------------------------------------------------------------
# 1. Two servers of release 0.1, writers through b.
# ---------------------------------------------------------------------------
my ($ok) = DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(4));
ok($ok, "release $from: four nodes on two servers share the shards");
is(versions($store) . ' ' . versions($b), "$from $from", "both databases are at $from");

# the writers call the short names of 0.1 throughout: its callers keep working
my %load_opts = (clients => 2, entities => 40, retry => 1, pause_ms => 2, short_names => 1);
my @loads = (DurableClusterLoad->start($b, name => 'ru_b', mall => 'rolling', %load_opts));
makes_progress(100, 'the writers through b make progress');

# ---------------------------------------------------------------------------
# 2. The new files installed; the store's server restarts first.
# ---------------------------------------------------------------------------
my $to = DurableClusterLoad::install_tree($install);
isnt($to, $from, "the tree's version ($to) is installed over $from");
my $offset = -s $store->logfile;
$store->restart;
ok( eval {
		$store->wait_for_log(
			qr/durable_cluster node-\d\S* does not serve: the extension in the store is version \Q$from\E/,
			$offset);
	},
	'the store\'s restarted nodes refuse the 0.1 SQL objects');
($ok) = DurableClusterLoad::poll_until($store, shards_of('b'), expected => '100');
ok($ok, 'b\'s 0.1 nodes hold every shard');
makes_progress(100, 'b\'s 0.1 nodes write to the store running the new library');
my ($ret, $stdout, $stderr) = $store->psql('postgres',
	q{SELECT dc_send_command('rolling_probe', 'u1', 'login')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/ERROR:  55000: durable_cluster does not serve on this server/,
	'a command through the store\'s server meanwhile fails with 55000');

# ---------------------------------------------------------------------------
# 3. The store database updated: nodes of both versions serve together.
# ---------------------------------------------------------------------------
$store->safe_psql('postgres', 'ALTER EXTENSION durable_cluster UPDATE');
is(versions($store), $to, "the store database is at $to");
($ok) = DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(4));
ok($ok, 'the store\'s nodes serve again: four nodes share the shards');
cmp_ok($store->safe_psql('postgres', shards_of('store')), '>', 0, 'the store\'s nodes hold shards');
cmp_ok($store->safe_psql('postgres', shards_of('b')), '>', 0, 'and b\'s 0.1 nodes still do');

# the store's own nodes write with the new form of write_batch, or, when
# they write in their own process (durable_cluster.store_in_process), with
# no function call: their batches show it
my $in_process = $store->safe_psql('postgres',
	q{SELECT current_setting('durable_cluster.store_in_process')}) eq 'on';
my $store_batches = q{SELECT coalesce(sum(batches), 0) FROM dc.node_stats};
my $old_calls = $store->safe_psql('postgres', $old_form);
my $new_calls = $store->safe_psql('postgres', $new_form);
my $batches = $store->safe_psql('postgres', $store_batches);
makes_progress(200, 'the writers through b carry on');
($ok) = DurableClusterLoad::poll_until($store,
	"SELECT ($old_form) > $old_calls AND ($store_batches) > $batches"
	  . ($in_process ? '' : " AND ($new_form) > $new_calls"));
ok($ok, '0.1 nodes write with 0.1\'s write_batch, the new ones '
	  . ($in_process ? 'in their own process' : 'with one durable_cluster.batch'))
  or diag('write_batch calls: 0.1 form ' . $store->safe_psql('postgres', $old_form)
	  . ', new form ' . $store->safe_psql('postgres', $new_form)
	  . '; batches of the store\'s nodes: ' . $store->safe_psql('postgres', $store_batches));
is($store->safe_psql('postgres', $new_form), $new_calls,
	'nothing calls the new form of write_batch: the new nodes write in process')
  if $in_process;

for my $server ($store, $b)
{
	is($server->safe_psql('postgres', q{
SELECT count(DISTINCT split_part(r ->> 'node', '@', 2)) || ' ' || sum((r ->> 'revision')::int)
  FROM (SELECT dc_send_command('mixed_' || current_setting('port'), 'u' || g, 'add_balance',
                               '{"amount": 1}') AS r
          FROM generate_series(1, 40) g) s}),
		'2 40', 'through ' . $server->name . ': 40 commands applied by the nodes of both servers');
}

# a transfer from an entity of a 0.1 node to one of a new node, and back
my $pick = q{SELECT 'x' || g FROM generate_series(1, 1000) g
  WHERE (SELECT m.address FROM dc_shards s JOIN dc_members m ON m.name = s.node
          WHERE s.shard_id = dc_shard_id('xfer', 'x' || g)) = '%s' ORDER BY g LIMIT 1};
my $on_b = $store->safe_psql('postgres', sprintf($pick, $address{b}));
my $on_store = $store->safe_psql('postgres', sprintf($pick, $address{store}));
$store->safe_psql('postgres',
	qq{SELECT dc_send_command('xfer', '$on_b', 'add_balance', '{"amount": 10}')});
like($b->safe_psql('postgres', qq{SELECT dc_transfer('xfer', '$on_b', 'xfer', '$on_store', 4)}),
	qr/"status": "completed"/, 'a transfer from a 0.1 node\'s entity to a new node\'s completes');
like($store->safe_psql('postgres', qq{SELECT dc_transfer('xfer', '$on_store', 'xfer', '$on_b', 1.5)}),
	qr/"status": "completed"/, 'and one back');
is($store->safe_psql('postgres', qq{
SELECT (dc_get_state('xfer', '$on_b') #>> '{state,balance}') || ' '
       || (dc_get_state('xfer', '$on_store') #>> '{state,balance}')}),
	'7.50 2.50', 'the money moved once each way');

# ---------------------------------------------------------------------------
# 4. b restarts, its database updated.
# ---------------------------------------------------------------------------
# the store's writers run through b's restart: its shards fail over
push @loads, DurableClusterLoad->start($store, name => 'ru_store', mall => 'rolling', %load_opts);
makes_progress(100, 'writers through the store make progress');
my $b_pids = $store->safe_psql('postgres', qq{
SELECT string_agg(pid::text, ',') FROM dc_members WHERE status = 'up' AND address = '$address{b}'});
$b->restart;
$b->safe_psql('postgres', 'ALTER EXTENSION durable_cluster UPDATE');
pass('the update of b\'s database succeeds: b runs the new library');
for my $server ($store, $b)
{
	is($server->safe_psql('postgres', q{SELECT library || ' ' || extension FROM dc.version()}),
		"$to $to", $server->name . ": dc.version() says $to and $to");
}
($ok) = DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(4) . qq{
   AND (SELECT count(*) FROM dc_members WHERE status = 'up' AND address = '$address{b}'
           AND pid NOT IN ($b_pids)) = 2});
ok($ok, 'b\'s nodes rejoined with the new library, and the shards are shared again');
$new_calls = $store->safe_psql('postgres', $new_form);
push @loads, DurableClusterLoad->start($b, name => 'ru_b_after', mall => 'rolling', %load_opts);
makes_progress(200, 'writers through both servers make progress');
($ok) = DurableClusterLoad::poll_until($store, "SELECT ($new_form) > $new_calls");
ok($ok, 'b\'s new nodes, whose store is on another server, write with one durable_cluster.batch');

$_->stop for @loads;
for my $load (@loads)
{
	$load->failures_ok($load->{name}, allowed => [ '55000', '40003', qr/^(08|57)/ ]);
}
DurableClusterLoad::check_stored($store, 'rolling upgrade', \@loads, in_flight => 1);

$_->stop for ($b, $store);
done_testing();
