#
# test/t/021_network_faults.pl
#     The cluster on a real (virtual) network, with faults made by the
#     kernel: three servers -- the store and two more, a and b, each with
#     two nodes -- in network namespaces of their own behind a bridge,
#     writers on a and b retrying what failed, and server b's link
#     slowed, made lossy, cut one way and cut both ways.
#
#     Asserted:
#       - slow link: while every packet to and from b is held back a
#         quarter of failure_timeout (each store round trip of b's nodes
#         takes half of failure_timeout more), b's heartbeats reach the
#         store less than half of failure_timeout apart, with writers on
#         b, no member is declared down (no incarnation changes) and the
#         writers keep going;
#       - loss (30 %), one-way cut, cut: every one is recovered from --
#         after it ends all six members are up and balanced again and the
#         writers make progress; a cut's members are declared down within
#         failure_timeout + heartbeat_interval (+ 1 s of polling slack), a
#         one-way cut's (b still reaches the store) within that plus the
#         heartbeats b sends unanswered, failure_timeout / 2 + 2 of them;
#       - what the writers were told is what is stored: nothing
#         acknowledged is lost, nothing is applied twice, and no command
#         answered with an error other than 40003 -- 08006 among them --
#         is applied (the writers send such a command again under a new
#         command_id, so an application despite the answer would be one
#         too many; DurableClusterLoad).
#
#     The network is made by test/netfault/netlab.pl, which runs as root
#     (make test as root starts it and tells us its socket in
#     DC_NETLAB_SOCKET); without it the test is skipped.  The servers run
#     as this (unprivileged) user, started inside their namespaces by the
#     lab; psql reaches them over their Unix sockets, outside the faults,
#     while everything between the servers goes over the faulty network.
#     The measured times are printed (note) for docs/operations.md
#     section.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $socket_path = $ENV{DC_NETLAB_SOCKET} // '';
# test/run_tests.sh says why it could not start the lab, if it tried
plan skip_all => ($ENV{DC_NETLAB_SKIP}
	  || 'network faults need root: "make test" run as root starts the lab (test/netfault/netlab.pl)')
  unless $socket_path ne '' && -S $socket_path;

my $failure_timeout = 2;
my $heartbeat_interval = 0.2;
my $conf = qq{
durable_cluster.heartbeat_interval = '${\ ($heartbeat_interval * 1000)}ms'
durable_cluster.failure_timeout = '${failure_timeout}s'
durable_cluster.ask_timeout = '10s'
};

my $lab = IO::Socket::UNIX->new(Peer => $socket_path, Type => SOCK_STREAM)
  or BAIL_OUT("cannot reach the network lab at $socket_path: $!");

# one command to the lab, its answer within 3 minutes (starting a server
# is the slowest), or the test dies
sub lab
{
	my ($command) = @_;
	print $lab "$command\n";
	$lab->flush;
	die "lab: '$command': no answer within 180 s\n"
	  unless IO::Select->new($lab)->can_read(180);
	my $answer = <$lab> // 'error: no answer';
	chomp $answer;
	die "lab: '$command': $answer\n" unless $answer =~ /^ok\b/;
	return $answer;
}

# whatever happens, the namespaces and what runs in them go away
END { eval { lab('down') } if $lab; }

my %address = lab('up store a b') =~ /(\w+)=([\d.]+)/g;
note("lab addresses: " . join(', ', map { "$_=$address{$_}" } sort keys %address));

# A member server in namespace $ns: listening on its lab address (and its
# Unix socket, for psql), known to the others by that address, letting
# the lab network in.
sub lab_server
{
	my ($ns, $store) = @_;
	my $configure = sub {
		my ($node) = @_;
		$node->append_conf('pg_hba.conf', "host all all $address{$ns}/24 trust");
		return $conf . qq{
listen_addresses = '$address{$ns}'
durable_cluster.advertise_address = '$address{$ns}:${\ $node->port}'
};
	};
	my $start = sub {
		my ($node) = @_;
		lab("start $ns " . $node->data_dir . ' ' . $node->logfile);
		$node->_update_pid(1);
	};
	return DurableClusterLoad::new_member_server("net_$ns", $store, $configure,
		start => $start);
}

my $store = lab_server('store', undef);
my $store_conninfo =
  "host=$address{store} port=${\ $store->port} dbname=postgres sslmode=disable gssencmode=disable";
my $server_a = lab_server('a', $store_conninfo);
my $server_b = lab_server('b', $store_conninfo);
ok(DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(6), timeout => 120),
	'six nodes on three servers joined over the lab network')
  or DurableClusterLoad::dump_cluster($store, 'at start');

my $members_of_b = qq{
SELECT string_agg(name, ',' ORDER BY name) FROM dc.members
 WHERE address = '$address{b}:${\ $server_b->port}'};
my @b_members = split /,/, $store->safe_psql('postgres', $members_of_b);
is(scalar @b_members, 2, "b's two nodes are members (@b_members)");

my $incarnations = q{
SELECT string_agg(name || ':' || incarnation, ',' ORDER BY name) FROM dc.members};


my @loads = (
	DurableClusterLoad->start($server_a, name => 'net_a', clients => 2, entities => 40,
		retry => 1, pause_ms => 5, budget => 20000, store => $store),
	DurableClusterLoad->start($server_b, name => 'net_b', clients => 2, entities => 40,
		retry => 1, pause_ms => 5, budget => 20000, store => $store));
for my $load (@loads)
{
	ok($load->wait_for_progress(50, 60), "writers on $load->{name} are under way");
}

# ---- a slow link: not a dead node ----
my $delay_ms = $failure_timeout * 1000 / 4;
my $before = $store->safe_psql('postgres', $incarnations);
my @stored_before = map { $_->stored_commands } @loads;
lab("fault b delay $delay_ms");
# b's nodes send their heartbeats on a session of their own, which waits
# for none of their batches (store.c): the store sees them no further
# apart than with a fast link, whatever b's writers make its nodes do
my $largest_age = 0;
my $slow_until = time + 20;
while (time < $slow_until)
{
	my $age = $store->safe_psql('postgres', qq{
SELECT extract(epoch FROM max(clock_timestamp() - last_heartbeat)) FROM dc.members
 WHERE status = 'up' AND name IN ('${\ join("','", @b_members)}')});
	$largest_age = $age if $age ne '' && $age > $largest_age;
	usleep(100_000);
}
cmp_ok($largest_age, '<', $failure_timeout / 2,
	"b's link $delay_ms ms slower each way for 20 s, writers on b: its nodes' heartbeats at most $largest_age s old");
is($store->safe_psql('postgres', $incarnations), $before,
	'slow link: no member was declared down (incarnations unchanged)');
for my $i (0 .. $#loads)
{
	# every third command goes to one of b's nodes, whose batches take
	# two store round trips (read, write) a second longer each
	my $done = $loads[$i]->stored_commands - $stored_before[$i];
	cmp_ok($done, '>', 0, "slow link: writers on $loads[$i]{name} go on ($done commands in 20 s)");
}
lab('heal b');

# After a fault: six members up and balanced, writers on both servers
# making progress.  Returns the seconds from healing to balanced.
sub recovered
{
	my ($what) = @_;
	my $start = time;
	my ($ok) = DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(6),
		timeout => 60, interval => 0.1);
	my $took = time - $start;
	ok($ok, sprintf('%s: all members up and balanced again %.1f s after it ended', $what, $took))
	  or DurableClusterLoad::dump_cluster($store, "after $what");
	for my $load (@loads)
	{
		ok($load->wait_for_progress(20, 60), "$what: writers on $load->{name} go on");
	}
	return $took;
}

# ---- loss ----
lab('fault b loss 30');
ok(DurableClusterLoad::run_for($store, 10), "30 % of b's packets lost for 10 s");
lab('heal b');
my $loss_recovery = recovered('30 % loss');

# ---- a cut, one way or both: b's members are declared down, then rejoin ----
my %measured;
for my $kind ('asym', 'cut')
{
	my $what = $kind eq 'cut' ? 'cut' : 'one-way cut (b hears nothing)';
	my $cut_at = time;
	lab("fault b $kind");
	my ($down, $seconds) = DurableClusterLoad::poll_until($store, qq{
SELECT count(*) FROM dc.members
 WHERE address = '$address{b}:${\ $server_b->port}' AND status = 'down'},
		expected => '2', timeout => 30, interval => 0.1);
	ok($down, sprintf("%s: b's members declared down after %.1f s", $what, $seconds));
	if ($kind eq 'cut')
	{
		cmp_ok($seconds, '<=', $failure_timeout + $heartbeat_interval + 1,
			"$what: within failure_timeout + heartbeat_interval (+ 1 s of polling)");
	}
	else
	{
		# b's heartbeats still reach the store: its heartbeat session sends
		# them unanswered for as long as a link half of failure_timeout slow
		# would need (failure_timeout / 2 + 2 heartbeats, store.c), then stops
		cmp_ok($seconds, '<=',
			$failure_timeout + ($failure_timeout / 2 + 2 * $heartbeat_interval) + $heartbeat_interval + 1,
			"$what: within failure_timeout + the heartbeats sent unanswered + heartbeat_interval (+ 1 s of polling)");
	}
	ok(DurableClusterLoad::poll_until($store, DurableClusterLoad::balanced_query(4), timeout => 30),
		"$what: the other four nodes own every shard");
	# stay cut a little longer: b's nodes find out on their own
	usleep(1_000_000 * $failure_timeout);
	lab('heal b');
	$measured{$kind} = [ $seconds, recovered($what) ];
}

$_->stop for @loads;
for my $load (@loads)
{
	ok($load->clients_ok, "writers on $load->{name} ended on the stop flag");
	$load->failures_ok("network faults ($load->{name})",
		allowed => [ '55000', '40003', '08006', '53000' ]);
	note(sprintf('%s: attempts answered 08006: %d, 40003: %d, 55000: %d (after any but 40003 '
		  . 'the command was sent again as a new one)',
		$load->{name}, map { $load->answered($_) } qw(08006 40003 55000)));
}
DurableClusterLoad::check_stored($store, 'network faults', \@loads);

note(sprintf('measured: loss recovery %.1f s; one-way cut: down after %.1f s, recovered %.1f s '
	  . 'after healing; cut: down after %.1f s, recovered %.1f s after healing',
	$loss_recovery, @{ $measured{asym} }, @{ $measured{cut} }));

$_->stop for ($server_a, $server_b, $store);
done_testing();
