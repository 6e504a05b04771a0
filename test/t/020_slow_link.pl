#
# test/t/020_slow_link.pl
#     A slow link is not a dead node.  A server's nodes reach the store
#     through a proxy that holds every packet back, so that each round trip
#     to the store takes half of failure_timeout more than normal; idle and
#     under load, none of them is ever declared down (their incarnations do
#     not change), and what the writers through that server were told is
#     what is stored.
#
#     The proxy is a small TCP relay in this file (the TAP tests run as an
#     ordinary user: no netfilter, no network namespaces); it adds DELAY
#     seconds each way.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $failure_timeout = 2;
my $delay = $failure_timeout / 4;    # each way: a round trip is failure_timeout / 2 slower
my $conf = qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '${failure_timeout}s'
durable_cluster.ask_timeout = '30s'
};

# Relay 127.0.0.1:$port to the Unix socket $target, every chunk held back
# $delay seconds in each direction.  Runs in a child process until killed.
sub start_delay_proxy
{
	my ($port, $target) = @_;
	my $listener = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 64, ReuseAddr => 1)
	  or die "proxy: cannot listen on $port: $!";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid)
	{
		close $listener;
		return $pid;
	}
	my $select = IO::Select->new($listener);
	my (%peer, @queue);
	while (1)
	{
		my $wait = @queue ? $queue[0][0] - time : 1;
		for my $fh ($select->can_read($wait > 0 ? $wait : 0))
		{
			if ($fh == $listener)
			{
				my $client = $listener->accept or next;
				my $server = IO::Socket::UNIX->new(Peer => $target, Type => SOCK_STREAM);
				if (!$server)
				{
					close $client;
					next;
				}
				$peer{$client} = $server;
				$peer{$server} = $client;
				$select->add($client, $server);
				next;
			}
			my $n = sysread($fh, my $buf, 65536);
			my $to = $peer{$fh};
			next unless $to;
			if (!$n)
			{
				# the end of the stream goes through after the delay too
				$select->remove($fh);
				delete $peer{$fh};
				push @queue, [ time + $delay, $to, undef ];
				next;
			}
			push @queue, [ time + $delay, $to, $buf ];
		}
		while (@queue && $queue[0][0] <= time)
		{
			my (undef, $to, $buf) = @{ shift @queue };
			if (!defined $buf)
			{
				$select->remove($to);
				delete $peer{$to};
				close $to;
				next;
			}
			for (my $off = 0; $off < length $buf;)
			{
				my $w = syswrite($to, $buf, length($buf) - $off, $off);
				last unless $w;
				$off += $w;
			}
		}
	}
}

my $store = DurableClusterLoad::new_member_server('slow_store', undef, $conf);
my $proxy_port = PostgreSQL::Test::Cluster::get_free_port();
my $proxy = start_delay_proxy($proxy_port,
	$store->host . '/.s.PGSQL.' . $store->port);
END { kill 'KILL', $proxy if $proxy; }

# (no SSL or GSS negotiation: these servers offer neither, and each costs
# a round trip more to connect)
my $b = DurableClusterLoad::new_member_server('slow_b',
	"host=127.0.0.1 port=$proxy_port dbname=postgres sslmode=disable gssencmode=disable", $conf);
ok(DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(4), timeout => 120),
	'the nodes behind the slow link joined and got their shards');

my $remote_slow = $store->safe_psql('postgres', q{
SELECT count(*) FROM dc.members WHERE status = 'up' AND address <> durable_cluster.self_address()});
is($remote_slow, '2', 'two members on the server behind the proxy');

my $incarnations = q{
SELECT string_agg(name || ':' || incarnation, ',' ORDER BY name) FROM dc.members};
my $before = $store->safe_psql('postgres', $incarnations);

# For $seconds, the oldest heartbeat of the slow server's members, sampled
# every 100 ms: the largest age seen.  Each round trip is failure_timeout /
# 2 slower.  The nodes of a server whose store is elsewhere send their
# heartbeats on a session of their own, without waiting for any statement
# or for the heartbeats before them to come back (store.c), every
# min(heartbeat_interval, failure_timeout / 4): under load, however long a
# batch takes, the store sees them that far apart, late only by the
# link's one-way delay, well under failure_timeout / 2.  (Riding along with
# the node's statements, as they did before, they were up to a round trip
# more apart.)  Idle, where the nodes' ticks also take round trips, the
# bound is the one before, three quarters of failure_timeout.
sub largest_heartbeat_age
{
	my ($seconds) = @_;
	my $largest = 0;
	my $end = time + $seconds;
	while (time < $end)
	{
		my $age = $store->safe_psql('postgres', q{
SELECT extract(epoch FROM max(clock_timestamp() - last_heartbeat)) FROM dc.members
 WHERE status = 'up' AND address <> durable_cluster.self_address()});
		$largest = $age if $age ne '' && $age > $largest;
		usleep(100_000);
	}
	return $largest;
}
my $bound = 0.75 * $failure_timeout;

my $idle_age = largest_heartbeat_age(15);
cmp_ok($idle_age, '<', $bound, "idle for 15 s: heartbeats at most ${idle_age} s old");
is($store->safe_psql('postgres', $incarnations), $before,
	'idle: no member was declared down (incarnations unchanged)');

my $load = DurableClusterLoad->start($b, name => 'slow', clients => 2, entities => 20,
	budget => 2000);
ok(DurableClusterLoad::poll_until($store, q{
SELECT coalesce(sum(revision), 0) >= 40 FROM durable_cluster.entity_state
 WHERE mall_id = 'mall_slow'}, timeout => 60), 'writers through the slow server are under way');
my $load_age = largest_heartbeat_age(15);
cmp_ok($load_age, '<', $failure_timeout / 2,
	"under load for 15 s: heartbeats at most ${load_age} s old, a batch's round trips notwithstanding");
$load->stop;
is($store->safe_psql('postgres', $incarnations), $before,
	'under load: no member was declared down (incarnations unchanged)');
$load->failures_ok('slow link', max => 0);
DurableClusterLoad::check_stored($store, 'slow link', [$load]);

$b->stop;
$store->stop;
kill 'KILL', $proxy;
waitpid($proxy, 0);
$proxy = undef;
done_testing();
