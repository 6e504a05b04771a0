#
# test/t/003_failover.pl
#     Failover under concurrent writers, on a server with three nodes, a
#     200 ms heartbeat and a 2 s failure timeout:
#
#   1. A node worker stopped with SIGSTOP is marked down and its shards go
#      to the other up nodes within failure_timeout + 2 s.  After SIGCONT it
#      rejoins as a new incarnation and the shards are rebalanced.  Nothing
#      it held commits behind its callers' backs: the stored totals equal
#      the acknowledged ones exactly.  A LISTEN client sees "down",
#      "rebalanced" and then "joined" for the new incarnation.
#      1b: the same with the node stopped, for sure, while one of its
#      batches is being written.
#   2. A node worker ended with pg_terminate_backend() leaves, is restarted
#      by the postmaster as a new incarnation, and no acknowledged command
#      is lost.
#   3. A crash restart of the whole server under load (SIGKILL of a client
#      backend): every command acknowledged before the crash is stored
#      exactly once; of the commands in flight (at most one per client)
#      some may be stored, nothing else.
#   4. The LISTEN client of part 1 saw "down" for the stopped node,
#      "rebalanced" moving all its shards away, then "joined" for its new
#      incarnation and "rebalanced" again; part 2 checks "left" + "joined".
#
# Six writers (DurableClusterLoad.pm) send add_balance commands with amounts
# in whole cents to 30 entities of a mall of their own per part, and write
# down every reply and every error.  Commands caught in a change of owner
# may fail with 55000 or 40003; such failures are counted and printed, and
# the stored state must still equal exactly what was acknowledged.
#
# All waiting is by polling with generous deadlines; the only timing that
# is asserted is the failover time, as the issue demands.
#

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use DurableClusterLoad;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $n_nodes = 3;
my $n_shards = 100;
my $n_clients = 6;
my $n_entities = 30;
my $failure_timeout = 2;    # seconds, as configured below
my $ask_timeout = 10;       # seconds, as configured below
my @allowed_failures = ('55000', '40003');

my $node = DurableClusterLoad::new_server('failover', $n_nodes, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '${failure_timeout}s'
durable_cluster.ask_timeout = '${ask_timeout}s'
# PostgreSQL::Test::Cluster turns this off; part 3 needs the postmaster to
# reinitialise after a backend dies.
restart_after_crash = on
});

sub member { return DurableClusterLoad::member($node, $_[0]); }

sub shards_of
{
	my ($name) = @_;
	return split /,/,
	  $node->safe_psql('postgres',
		"SELECT string_agg(shard_id::text, ',' ORDER BY shard_id) FROM dc.shards WHERE node = '$name'"
	  );
}

# "durable_cluster node node-N": the type and the member name of a worker
sub worker_of
{
	my ($pid) = @_;
	return $node->safe_psql('postgres',
		"SELECT backend_type || ' ' || application_name FROM pg_stat_activity WHERE pid = $pid");
}


# ---------------------------------------------------------------------------
# The common course of parts 1, 1b and 1c: $victim (member row $before) was
# stopped with SIGSTOP at $t_stop while $load runs.
#
#   - within failure_timeout + 2 s it must be marked down and every shard
#     must be owned by one of the other up nodes (measured and asserted);
#   - then every writer command that began before the change of owner (and
#     a second after, for the map to reach every caller) must end, one way
#     or the other: from then on, whatever the stopped node still holds
#     belongs to a caller that has already been told something;
#   - the other nodes serve every shard while it is stopped;
#   - after SIGCONT it rejoins as a new incarnation and the shards are
#     rebalanced over the three nodes.
#
# The caller then stops the load and checks that the stored totals equal
# the acknowledged ones exactly: nothing the stopped node held may commit
# behind the back of a caller that was told 55000 or 40003.
# ---------------------------------------------------------------------------
sub stopped_node_course
{
	my (%a) = @_;
	my ($label, $load, $victim, $before, $t_stop) = @a{qw(label load victim before t_stop)};
	my @victim_shards = @{ $a{shards} };

	my ($failed_over, $failover_time) = DurableClusterLoad::poll_until(
		$node, qq{
SELECT m.status = 'down'
   AND NOT EXISTS (SELECT 1 FROM dc.shards WHERE node = '$victim')
   AND (SELECT count(*) FROM dc.shards s JOIN dc.members o ON o.name = s.node
         WHERE o.status = 'up') = $n_shards
  FROM dc.members m WHERE m.name = '$victim'},
		since => $t_stop,
		timeout => $failure_timeout + 2 + 10);
	ok($failed_over,
		"$label: $victim is marked down and all its shards are owned by other up nodes")
	  or DurableClusterLoad::dump_cluster($node, "$label, after SIGSTOP");
	note(sprintf('%s: failover took %.2f s%s', $label, $failover_time,
		$failed_over ? '' : ' (and had not happened then)'));
	cmp_ok($failover_time, '<=', $failure_timeout + 2,
		"$label: failover within failure_timeout + 2 s ($failure_timeout + 2 s)");
	# When the shards had moved, by the server's clock.
	my $t_failover = $node->safe_psql('postgres', 'SELECT clock_timestamp()');

	if ($failed_over)
	{
		is( $node->safe_psql(
				'postgres', qq{
SELECT count(*) FROM dc.members WHERE status = 'up' AND name <> '$victim'}),
			$n_nodes - 1,
			"$label: the other nodes are up");
		is( $node->safe_psql(
				'postgres', qq{
SELECT count(*) FROM dc.shards s JOIN dc.members m ON m.name = s.node
 WHERE m.status = 'up' AND m.name <> '$victim'
   AND s.shard_id IN (@{[ join(',', @victim_shards) ]})}),
			scalar(@victim_shards),
			"$label: each of the " . scalar(@victim_shards)
			  . " shards of $victim is owned by another up node");
	}

	my ($settled) = DurableClusterLoad::poll_until(
		$node, qq{
SELECT clock_timestamp() > '$t_failover'::timestamptz + interval '1 s'
       AND count(*) = 0
  FROM pg_stat_activity
 WHERE application_name LIKE '@{[ $load->appname_pattern ]}'
   AND state = 'active'
   AND query_start < '$t_failover'::timestamptz + interval '1 s'},
		timeout => $ask_timeout + 60,
		interval => 0.2);
	ok($settled, "$label: every command sent before the failover has ended");

	if ($failed_over)
	{
		DurableClusterLoad::wait_for_cluster($node, $n_nodes - 1,
			"$label: while $victim is stopped");
		ok($load->wait_for_progress(200), "$label: writers are served while $victim is stopped");
	}

	is(kill('CONT', $before->{pid}), 1, "$label: sent SIGCONT to $victim");
	my $want_incarnation = $before->{incarnation} + 1;
	my ($rejoined) = DurableClusterLoad::poll_until(
		$node, qq{
SELECT status = 'up' AND incarnation @{[ $a{exact_incarnation} ? '=' : '>=' ]} $want_incarnation
  FROM dc.members WHERE name = '$victim'},
		timeout => 60);
	ok($rejoined,
		"$label: after SIGCONT $victim rejoined as incarnation "
		  . ($a{exact_incarnation} ? '' : 'at least ') . $want_incarnation)
	  or DurableClusterLoad::dump_cluster($node, "$label, after SIGCONT");
	DurableClusterLoad::wait_for_cluster($node, $n_nodes, "$label: after SIGCONT");
	is( $node->safe_psql(
			'postgres', qq{
SELECT max(shard_count) - min(shard_count) <= 1 AND sum(shard_count) = $n_shards
  FROM dc.members WHERE status = 'up'}),
		't',
		"$label: after SIGCONT shards are balanced over the up members (max - min <= 1)");
	cmp_ok(member($victim)->{shard_count}, '>', 0, "$label: $victim owns shards again");
	ok($load->wait_for_progress(300), "$label: writers go on after the rejoin");
	return;
}

# Loads whose own check passed are checked again after later parts: what
# they stored must not change.  (A load that failed its own check is not
# checked again, so that one problem is reported once.)
my @settled_loads;

sub finish_load
{
	my ($label, $load) = @_;
	$load->stop;
	ok($load->clients_ok, "$label: every writer ran until it was told to stop");
	cmp_ok($load->acked, '>', 0, "$label: commands were acknowledged");
	$load->failures_ok($label, allowed => \@allowed_failures);
	push @settled_loads, $load
	  if DurableClusterLoad::check_stored($node, $label, [$load]);
	return;
}

# ===========================================================================
# 1. SIGSTOP a node under load, then SIGCONT it.
# ===========================================================================
my $listener = DurableClusterLoad::Listener->new($node);

my $load1 = DurableClusterLoad->start(
	$node,
	name => 'stop',
	clients => $n_clients,
	entities => $n_entities,
	seed => 1);
ok($load1->wait_for_progress(300), 'SIGSTOP: the writers are under way');

my $victim = 'node-2';
my $before = member($victim);
is($before->{status}, 'up', "SIGSTOP: $victim is up before");
is(worker_of($before->{pid}), "durable_cluster node $victim",
	"SIGSTOP: dc.members.pid of $victim is its worker");
my @victim_shards = shards_of($victim);
cmp_ok(scalar(@victim_shards), '>', 0, "SIGSTOP: $victim owns shards before");

$listener->poll;
my $events_from = scalar($listener->events);

ok(DurableClusterLoad::pause_node($node, $before->{pid}), "SIGSTOP: stopped $victim (pid $before->{pid})");
stopped_node_course(
	label => 'SIGSTOP',
	load => $load1,
	victim => $victim,
	before => $before,
	shards => \@victim_shards,
	t_stop => time,
	exact_incarnation => 1);
finish_load('SIGSTOP', $load1);

# ---------------------------------------------------------------------------
# 4. What the LISTEN client saw during part 1.
# ---------------------------------------------------------------------------
{
	my $down = $listener->wait_for(
		sub {
			my ($e) = @_;
			return ($e->{event} // '') eq 'down'
			  && ($e->{node} // '') eq $victim
			  && ($e->{incarnation} // -1) == $before->{incarnation};
		},
		from => $events_from);
	ok($down, "LISTEN: a down event for $victim incarnation $before->{incarnation}")
	  or diag("events seen:\n" . $listener->describe($events_from));

	my $joined = $listener->wait_for(
		sub {
			my ($e) = @_;
			return ($e->{event} // '') eq 'joined'
			  && ($e->{node} // '') eq $victim
			  && ($e->{incarnation} // -1) == $before->{incarnation} + 1;
		},
		from => $events_from);
	ok($joined, "LISTEN: a joined event for $victim incarnation " . ($before->{incarnation} + 1))
	  or diag("events seen:\n" . $listener->describe($events_from));
	ok(!exists $joined->{address}, 'LISTEN: the joined event carries no address')
	  if $joined;
	ok(!$down || !$joined || $down->{_seq} < $joined->{_seq}, 'LISTEN: down comes before joined');

	# The rebalanced events between "down" and "joined" move every shard of
	# the stopped node to another node.
	my %moved_away;
	my $rebalanced_before_join = 0;
	my $bad_moves = 0;
	if ($down)
	{
		my $end = $joined ? $joined->{_seq} : scalar($listener->events);
		for my $e (($listener->events)[ $down->{_seq} .. $end - 1 ])
		{
			next unless ($e->{event} // '') eq 'rebalanced';
			$rebalanced_before_join++;
			$bad_moves++
			  unless ref $e->{moves} eq 'ARRAY'
			  && ($e->{shards_moved} // -1) == scalar(@{ $e->{moves} });
			for my $m (@{ $e->{moves} || [] })
			{
				$moved_away{ $m->{shard} } = 1
				  if defined $m->{node} && $m->{node} ne $victim
				  && defined $m->{epoch} && $m->{epoch} =~ /^\d+$/;
			}
		}
	}
	cmp_ok($rebalanced_before_join, '>', 0,
		"LISTEN: rebalanced event(s) after $victim went down")
	  or diag("events seen:\n" . $listener->describe($events_from));
	is($bad_moves, 0, 'LISTEN: rebalanced events list as many moves as shards_moved');
	my @not_moved = grep { !$moved_away{$_} } @victim_shards;
	is(scalar(@not_moved), 0,
		"LISTEN: the rebalanced events move every shard of $victim to another node")
	  or diag("shards not announced as moved: @not_moved");

	my $after_join = $joined
	  ? $listener->wait_for(sub { ($_[0]->{event} // '') eq 'rebalanced' },
		from => $joined->{_seq} + 1)
	  : undef;
	ok($after_join, "LISTEN: a rebalanced event after $victim rejoined")
	  or diag("events seen:\n" . $listener->describe($events_from));
	is(scalar($listener->bad_payloads), 0, 'LISTEN: every payload is a JSON object')
	  or diag(join("\n", $listener->bad_payloads));
}

# ===========================================================================
# 1b. The same, with a node stopped in the middle of a batch.
#
# Where SIGSTOP lands in part 1 is luck.  Here it lands, for sure, while a
# batch of the victim is being written: a session takes an ACCESS EXCLUSIVE
# lock on the state table, every node's next batch blocks on it, and the
# first node seen blocked (its worker, or a store session working for it
# and named after it, waits on the lock) is the victim.  Its worker is
# stopped there and the lock is released at once, so the other nodes go
# on.  The issue asks for the same as in part 1: its shards move within
# failure_timeout + 2 s, and nothing it held commits behind its callers'
# backs -- the callers give up after ask_timeout, and after SIGCONT the
# stored totals must still equal the acknowledged ones exactly.
#
# The lock is held for about a second at most, well under failure_timeout,
# so that no other node is taken for dead; if no node blocked by then the
# part is skipped (and says so).
# ===========================================================================
{
	my $load = DurableClusterLoad->start(
		$node,
		name => 'stop_batch',
		clients => $n_clients,
		entities => $n_entities,
		seed => 4);
	ok($load->wait_for_progress(300), 'SIGSTOP in a batch: the writers are under way');

	# Everything about the candidates is read before the lock is taken.
	my %members_before = map { $_ => member($_) } split /\n/,
	  $node->safe_psql('postgres', "SELECT name FROM dc.members WHERE status = 'up'");
	my %shards_before = map { $_ => [ shards_of($_) ] } keys %members_before;
	is(scalar(keys %members_before), $n_nodes, "SIGSTOP in a batch: $n_nodes nodes up before");

	my $locker = $node->background_psql('postgres');
	$locker->query_safe('BEGIN');
	$locker->query_safe('LOCK TABLE durable_cluster.entity_state IN ACCESS EXCLUSIVE MODE');
	my $blocked_query = q{
SELECT m.name FROM dc.members m JOIN pg_stat_activity a
    ON a.pid = m.pid OR a.application_name = 'durable_cluster ' || m.name
 WHERE m.status = 'up' AND a.wait_event_type = 'Lock'
 ORDER BY m.name LIMIT 1};
	my $victim1b = '';
	my $deadline = time + 1.0;
	while (time < $deadline)
	{
		my ($r, $o) = $node->psql('postgres', $blocked_query);
		if ($r == 0 && ($o // '') ne '' && $members_before{$o})
		{
			$victim1b = $o;
			last;
		}
		usleep(10_000);
	}
	my ($before1b, $t_stop);
	if ($victim1b ne '')
	{
		$before1b = $members_before{$victim1b};
		is(kill('STOP', $before1b->{pid}), 1,
			"SIGSTOP in a batch: stopped $victim1b (pid $before1b->{pid}) with a batch blocked on the lock");
		$t_stop = time;
	}
	$locker->query_safe('COMMIT');
	$locker->quit;

  SKIP:
	{
		skip 'SIGSTOP in a batch: no node blocked on the lock within 1 s', 1
		  if $victim1b eq '';
		note("SIGSTOP in a batch: sessions of $victim1b once the lock was released: "
			  . $node->safe_psql('postgres', qq{
SELECT string_agg(pid || ' ' || backend_type || ' ' || coalesce(state, '') || ' '
                  || coalesce(wait_event_type, '') || ' ' || left(query, 40), '; ')
  FROM pg_stat_activity
 WHERE pid = $before1b->{pid} OR application_name = 'durable_cluster $victim1b'}));
		stopped_node_course(
			label => 'SIGSTOP in a batch',
			load => $load,
			victim => $victim1b,
			before => $before1b,
			shards => $shards_before{$victim1b},
			t_stop => $t_stop);
	}
	finish_load('SIGSTOP in a batch', $load);
}

# ===========================================================================
# 2. pg_terminate_backend() of a node under load.
# ===========================================================================
my $load2 = DurableClusterLoad->start(
	$node,
	name => 'term',
	clients => $n_clients,
	entities => $n_entities,
	seed => 2);
ok($load2->wait_for_progress(300), 'terminate: the writers are under way');

my $victim2 = 'node-1';
my $before2 = member($victim2);
is($before2->{status}, 'up', "terminate: $victim2 is up before");
$listener->poll;
$events_from = scalar($listener->events);

is($node->safe_psql('postgres', "SELECT pg_terminate_backend($before2->{pid})"),
	't', "terminate: pg_terminate_backend($before2->{pid}) of $victim2");
my ($restarted) = DurableClusterLoad::poll_until(
	$node, qq{
SELECT status = 'up' AND incarnation = $before2->{incarnation} + 1 AND pid <> $before2->{pid}
  FROM dc.members WHERE name = '$victim2'},
	timeout => 60);
ok($restarted,
	"terminate: $victim2 was restarted with a new pid as incarnation "
	  . ($before2->{incarnation} + 1))
  or DurableClusterLoad::dump_cluster($node, 'after pg_terminate_backend');
my $after2 = member($victim2);
is(worker_of($after2->{pid}), "durable_cluster node $victim2",
	"terminate: the new pid of $victim2 is its worker");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM pg_stat_activity WHERE pid = $before2->{pid}}),
	'0',
	'terminate: the old worker is gone');
DurableClusterLoad::wait_for_cluster($node, $n_nodes, 'terminate: rebalanced');
ok($load2->wait_for_progress(300), 'terminate: writers go on after the restart');

{
	my $left = $listener->wait_for(
		sub {
			($_[0]->{event} // '') eq 'left'
			  && ($_[0]->{node} // '') eq $victim2
			  && ($_[0]->{incarnation} // -1) == $before2->{incarnation};
		},
		from => $events_from);
	ok($left, "terminate: LISTEN sees $victim2 leave")
	  or diag("events seen:\n" . $listener->describe($events_from));
	my $joined = $listener->wait_for(
		sub {
			($_[0]->{event} // '') eq 'joined'
			  && ($_[0]->{node} // '') eq $victim2
			  && ($_[0]->{incarnation} // -1) == $before2->{incarnation} + 1;
		},
		from => $events_from);
	ok($joined, "terminate: LISTEN sees $victim2 join again")
	  or diag("events seen:\n" . $listener->describe($events_from));
}

DurableClusterLoad::check_stored($node, 'terminate: earlier parts untouched', [@settled_loads])
  if @settled_loads;
finish_load('terminate', $load2);

$listener->quit;

# ===========================================================================
# 3. Crash restart of the whole server under load.
# ===========================================================================
my %incarnation_before = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', 'SELECT name, incarnation FROM dc.members');

my $load3 = DurableClusterLoad->start(
	$node,
	name => 'crash',
	clients => $n_clients,
	entities => $n_entities,
	seed => 3);
ok($load3->wait_for_progress(500), 'crash: the writers are under way');

my $log_offset = -s $node->logfile;
my $crash_victim = $node->safe_psql(
	'postgres', q{
SELECT pid FROM pg_stat_activity WHERE application_name = 'dcload_crash_1'});
like($crash_victim, qr/^\d+$/, 'crash: found the backend of writer 1');
is(kill('KILL', $crash_victim), 1, "crash: sent SIGKILL to backend $crash_victim");

# Every writer loses its connection in the crash restart and psql gives up.
$load3->wait;
DurableClusterLoad::wait_for_crash_restart($node, $log_offset, 'crash');
my ($all_new) = DurableClusterLoad::poll_until(
	$node, qq{
SELECT count(*) FILTER (WHERE status = 'up' AND incarnation > CASE name
           @{[ join(' ', map { "WHEN '$_' THEN $incarnation_before{$_}" } sort keys %incarnation_before) ]}
           ELSE 0 END) = $n_nodes
  FROM dc.members},
	timeout => 60);
ok($all_new, 'crash: every node rejoined as a new incarnation')
  or DurableClusterLoad::dump_cluster($node, 'after the crash');
DurableClusterLoad::wait_for_cluster($node, $n_nodes, 'crash: after the restart');

my @in_flight = $load3->in_flight;
cmp_ok(scalar(@in_flight), '<=', $n_clients, 'crash: at most one command in flight per writer');
cmp_ok($load3->acked, '>', 0, 'crash: commands were acknowledged before the crash');
# A command whose caller or node is killed by the crash restart may also
# end in a connection (08) or shutdown (57) error before its psql dies.
# (A connection the crash cut before any error reached psql leaves no
# SQLSTATE at all: its outcome is as unknown as 08006's.)
$load3->failures_ok('crash', allowed => [ @allowed_failures, qr/^(08|57)/, qr/^$/ ]);
DurableClusterLoad::check_stored($node, 'crash', [$load3], in_flight => 1);
DurableClusterLoad::check_stored($node, 'crash: earlier parts untouched', [@settled_loads])
  if @settled_loads;

# The nodes carry on from what is stored.
my ($ok_after, $rev_after, $stored_before) = split /\|/,
  $node->safe_psql(
	'postgres', q{
SELECT r->>'ok', r->>'revision', e.revision
  FROM durable_cluster.entity_state e,
       LATERAL (SELECT dc.send_command(e.mall_id, e.user_id, 'add_balance',
                                       '{"amount": 0.01}') AS r) s
 WHERE e.mall_id = 'mall_crash' AND e.user_id = 'u001'}), -1;
is($ok_after, 'true', 'crash: a new command is acknowledged');
is($rev_after, ($stored_before // 0) + 1, 'crash: and gets the stored revision + 1');

ok($node->stop('fast', fail_ok => 1), 'clean shutdown at the end');

done_testing();
