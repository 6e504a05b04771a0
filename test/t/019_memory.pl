#
# test/t/019_memory.pl
#     Long-lived processes stay flat: the nodes (of a server holding the
#     store, and of a server whose store is elsewhere, which listens on its
#     store connection and through which commands are forwarded) and the
#     saga workers, with heartbeat_interval = 10ms, run about 2,000 ticks
#     idle and 2,000 under a small load after a warm-up, and grow by less
#     than a small bound.
#
#     How it is measured: a process's private memory is Private_Clean +
#     Private_Dirty of /proc/PID/smaps_rollup (what it alone holds, shared
#     memory and shared libraries' clean pages aside); a node's memory
#     contexts are their total, as it reports in dc.node_stats.memory_bytes.
#     Why the bounds are safe from noise: after the warm-up every cache is
#     full (20 entities), so a process only reuses what it has; malloc
#     arenas and AllocSet freelists may still round a little, which stays
#     far below 1 MiB of private memory and 256 KiB of contexts over 2,000
#     ticks, while a leak of even 500 bytes a tick is 1 MB.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $ticks_ms = 10;
my $phase_s = 20;        # 2,000 ticks of 10 ms
my $private_bound_kb = 1024;
my $context_bound = 256 * 1024;

sub member_server
{
	my ($name, $store) = @_;
	return DurableClusterLoad::new_member_server($name, $store, qq{
durable_cluster.heartbeat_interval = '${ticks_ms}ms'
durable_cluster.failure_timeout = '3s'
durable_cluster.ask_timeout = '20s'
});
}

my $store = member_server('mem_store');
my $remote = member_server('mem_remote', $store);
ok(DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(4), timeout => 60),
	'four nodes on two servers share the shards');

# The processes: each server's nodes and saga worker (which logs in once
# a node of its server saw the extension's role).
for my $server ($store, $remote)
{
	DurableClusterLoad::poll_until($server, q{
SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type LIKE 'durable_cluster %'},
		timeout => 30);
}
my %procs;
for my $server ($store, $remote)
{
	for my $row (split /\n/, $server->safe_psql('postgres', q{
SELECT pid || ' ' || backend_type || ' ' || application_name FROM pg_stat_activity
 WHERE backend_type LIKE 'durable_cluster %' ORDER BY 1}))
	{
		my ($pid, $type) = split / /, $row, 2;
		$procs{ $server->name . " $type" } = { pid => $pid, server => $server };
	}
}
is(scalar(grep { /node/ } keys %procs), 4, 'four node workers found');
is(scalar(grep { /sagas/ } keys %procs), 2, 'two saga workers found');

sub private_kb
{
	my ($pid) = @_;
	my $rollup = slurp_file("/proc/$pid/smaps_rollup");
	my ($clean) = $rollup =~ /^Private_Clean:\s+(\d+) kB/m;
	my ($dirty) = $rollup =~ /^Private_Dirty:\s+(\d+) kB/m;
	return $clean + $dirty;
}

sub context_bytes
{
	my %bytes;
	for my $server ($store, $remote)
	{
		for my $row (split /\n/, $server->safe_psql('postgres',
				q{SELECT node || ' ' || memory_bytes FROM dc.node_stats}))
		{
			my ($name, $b) = split / /, $row;
			$bytes{$name} = $b;
		}
	}
	return \%bytes;
}

sub sample
{
	return {
		private => { map { $_ => private_kb($procs{$_}{pid}) } keys %procs },
		contexts => context_bytes(),
	};
}

# Let every node tick for $phase_s seconds more: their heartbeats show it.
sub run_ticks
{
	my $since = $store->safe_psql('postgres', 'SELECT clock_timestamp()');
	return DurableClusterLoad::poll_until($store, qq{
SELECT bool_and(last_heartbeat > '$since'::timestamptz + interval '$phase_s seconds')
  FROM dc.members WHERE status = 'up'}, timeout => 5 * $phase_s);
}

sub flat
{
	my ($phase, $before, $after) = @_;
	for my $proc (sort keys %procs)
	{
		my $grew = $after->{private}{$proc} - $before->{private}{$proc};
		cmp_ok($grew, '<', $private_bound_kb,
			"$phase: $proc (pid $procs{$proc}{pid}) private memory grew by ${grew} kB");
	}
	for my $node (sort keys %{ $before->{contexts} })
	{
		my $grew = $after->{contexts}{$node} - $before->{contexts}{$node};
		cmp_ok($grew, '<', $context_bound,
			"$phase: $node memory contexts grew by $grew bytes");
	}
}

# The writers' entities are in the store, whichever server they write
# through: at least n of their commands stored.
sub stored_at_least
{
	my ($load, $n) = @_;
	return DurableClusterLoad::poll_until($store, qq{
SELECT coalesce(sum(revision), 0) >= $n FROM durable_cluster.entity_state
 WHERE mall_id = '$load->{mall}'}, timeout => 60);
}

# Warm-up: entities cached, connections made, plans prepared, through both
# servers (commands sent to the remote server are forwarded to the store's
# nodes and back).
my @loads = map {
	DurableClusterLoad->start($_, name => 'warm_' . $_->name, clients => 1, entities => 10)
} ($store, $remote);
ok(stored_at_least($_, 300), 'warm-up load under way') for @loads;
$_->stop for @loads;
$store->safe_psql('postgres', q{
SELECT dc.transfer('warm_mem_store', 'u1', 'warm_mem_remote', 'u1', 0.01)});
$remote->safe_psql('postgres', q{SELECT dc.tell('warm_mem_store', 'u2', 'login')});
ok(run_ticks(), 'warm-up ticks');

# Idle.
my $before = sample();
ok(run_ticks(), "idle: $phase_s s of ${ticks_ms} ms ticks");
flat('idle', $before, sample());

# A small load through both servers.
@loads = map {
	DurableClusterLoad->start($_, name => 'load_' . $_->name, clients => 1, entities => 10)
} ($store, $remote);
ok(stored_at_least($_, 200), 'load under way') for @loads;
$before = sample();
ok(run_ticks(), "under load: $phase_s s of ${ticks_ms} ms ticks");
my $after = sample();
$_->stop for @loads;
flat('under load', $before, $after);

$remote->stop;
$store->stop;
done_testing();
