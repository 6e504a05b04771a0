#
# test/t/001_acknowledged_totals.pl
#     Acknowledged commands are never lost, never applied twice, and survive
#     a clean restart and a crash of the whole server.
#
# Eight clients send 2,000 add_balance commands each, concurrently, spread
# over 50 entities of one mall.  Each client writes down every reply.  Then,
# for every entity:
#
#   stored balance  = sum of the amounts of its acknowledged commands
#   stored revision = number of its acknowledged commands
#   the revisions of its acknowledged replies are exactly 1..N
#
# and all 16,000 commands must have been acknowledged.  The same totals are
# checked again after "pg_ctl restart" and after a crash restart (a backend
# killed with SIGKILL makes the postmaster reinitialise everything, node
# workers included), both in storage and through the nodes (get_state), and
# new commands must continue from the stored revision.
#
# Last, a crash under load: a second mall is loaded by four clients and one
# of their backends is killed mid-stream.  Then no acknowledged revision may
# be missing from storage, and at most the commands in flight may have been
# applied without an acknowledgement.
#
# Amounts are whole cents, 0.01 to 9.99, chosen deterministically; all sums
# are done in integer cents here and in numeric on the server, so nothing
# depends on floating point.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $n_clients = 8;
my $n_commands = 2000;    # per client
my $n_entities = 50;
my $mall = 'mall001';
my $n_shards = 100;
my $n_nodes = 3;

# How long the load phase may take in all.  Generous: two cores shared by
# eight clients, three node workers and the server.
my $load_timeout = 5 * $PostgreSQL::Test::Utils::timeout_default;

sub user_of
{
	my ($i) = @_;
	return sprintf('u%02d', $i + 1);
}

# ---------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('dc');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
max_worker_processes = 32
durable_cluster.nodes = $n_nodes
# PostgreSQL::Test::Cluster turns this off; the crash part of this test needs
# the postmaster to reinitialise after a backend dies.
restart_after_crash = on
# 16,000 logged statements would bury what matters in the log.
log_statement = 'ddl'
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');

# Print what the cluster looks like; used when something goes wrong.
sub dump_cluster
{
	my ($when) = @_;
	my ($ret, $out, $err) = $node->psql(
		'postgres', q{
SELECT 'member', name, status, incarnation, pid, last_heartbeat FROM durable_cluster.members ORDER BY 2;
SELECT 'shards per node', node, count(*) FROM dc.shards GROUP BY node ORDER BY 2;
SELECT 'status', dc.cluster_status();
});
	diag("cluster $when (psql exit $ret):\n$out\n$err");
}

# Wait until the nodes are up, own every shard, and answer commands.
#
# The members table alone is not enough after a restart or a crash: the rows
# of the previous incarnations may still say 'up' for a while.  So also wait
# until get_state commands to a set of probe entities (in a mall of their
# own, never checked below) are answered, by all the nodes between them.
my $n_probes = 30;

sub wait_for_cluster
{
	my ($when) = @_;

	my $ready = $node->poll_query_until(
		'postgres', qq{
SELECT (SELECT count(*) FROM dc.members WHERE status = 'up') = $n_nodes
   AND (SELECT count(*) FROM dc.shards WHERE node IS NOT NULL) = $n_shards});
	ok($ready, "$when: $n_nodes nodes up, $n_shards shards owned")
	  or dump_cluster($when);

	$ready = $node->poll_query_until(
		'postgres', qq{
SELECT count(*) FILTER (WHERE (r->>'ok')::boolean)
       || '|' || count(DISTINCT r->>'node') FILTER (WHERE (r->>'ok')::boolean)
  FROM (SELECT dc.send_command('probe', 'p' || g, 'get_state') AS r
          FROM generate_series(1, $n_probes) g) s},
		"$n_probes|$n_nodes");
	ok($ready, "$when: all $n_nodes nodes answer commands")
	  or dump_cluster($when);
	return;
}

# After a SIGKILL: wait for the postmaster to go through its crash restart,
# then for the server to take connections again.  Do not trust a connection
# before the log says so: until the postmaster has noticed the death, the
# old generation of processes could still accept one.
sub wait_for_crash_restart
{
	my ($log_offset, $when) = @_;

	my $reinitialised = 0;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my $log =
		  PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset);
		if ($log =~ /all server processes terminated; reinitializing/)
		{
			$reinitialised = 1;
			last;
		}
		usleep(100_000);
	}
	ok($reinitialised, "$when: postmaster went through a crash restart")
	  or diag("server log since the kill:\n"
		  . PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset));

	ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
		"$when: server accepts connections again");
	return;
}

wait_for_cluster('after CREATE EXTENSION');

# ---------------------------------------------------------------------------
# Load: each client is one psql running a script of $n_commands statements.
# Every statement prints one line: client, sequence number, user, cents, and
# the reply's ok and revision.  A statement that fails prints nothing (the
# error goes to stderr), so a missing line counts as not acknowledged.
# ---------------------------------------------------------------------------
my %expected;    # user => { cents => ..., count => ..., revisions => [...] }
my %sent;        # "client/seq" => [ user, cents ]

my @clients;
for my $c (1 .. $n_clients)
{
	my $script = "$PostgreSQL::Test::Utils::tmp_check/client_$c.sql";
	my $sql = '';
	for my $i (0 .. $n_commands - 1)
	{
		# Round-robin over the entities, each client starting elsewhere, so
		# that all clients hit all entities (and so all nodes) at once.
		my $user = user_of(($i + 7 * $c) % $n_entities);
		my $cents = 1 + (($c * 7919 + $i * 104729) % 999);
		my $amount = sprintf('%d.%02d', int($cents / 100), $cents % 100);

		$sent{"$c/$i"} = [ $user, $cents ];
		$sql .=
		    "SELECT '$c|$i|' || coalesce(r->>'ok', 'null') || '|' || coalesce(r->>'revision', '')"
		  . " FROM (SELECT dc.send_command('$mall', '$user', 'add_balance', "
		  . "'{\"amount\": $amount}') AS r) s;\n";
	}
	unlink $script;
	PostgreSQL::Test::Utils::append_to_file($script, $sql);

	my $out = "$PostgreSQL::Test::Utils::tmp_check/client_$c.out";
	my $err = "$PostgreSQL::Test::Utils::tmp_check/client_$c.err";
	unlink $out, $err;
	push @clients,
	  {
		client => $c,
		out => $out,
		err => $err,
		# Output goes straight to files: nothing has to pump pipes while we
		# wait for the other clients.
		harness => IPC::Run::start(
			[
				'psql', '-XAtq',
				'-v', 'ON_ERROR_STOP=0',
				'-d', $node->connstr('postgres'),
				'-f', $script
			],
			'<', \undef, '>', $out, '2>', $err,
			IPC::Run::timeout($load_timeout))
	  };
}

my $load_start = time;
my $clients_ok = 1;
for my $client (@clients)
{
	my $finished = eval { $client->{harness}->finish; 1 };
	if (!$finished)
	{
		diag("client $client->{client}: $@");
		$client->{harness}->kill_kill;
		$clients_ok = 0;
	}
	elsif ($client->{harness}->result != 0)
	{
		diag("client $client->{client}: psql exited with status "
			  . $client->{harness}->result);
		$clients_ok = 0;
	}
}
ok($clients_ok, "all $n_clients clients ran to the end");
note('load took ' . (time - $load_start) . ' s');

# Read what the clients were told.
my $acked = 0;
my $refused = 0;
my %answered;
for my $client (@clients)
{
	my $c = $client->{client};
	my $errors = PostgreSQL::Test::Utils::slurp_file($client->{err});
	if ($errors ne '')
	{
		my @lines = split /\n/, $errors;
		diag("client $c: " . scalar(@lines) . " line(s) on stderr, the first:\n"
			  . join("\n", @lines[ 0 .. ($#lines < 9 ? $#lines : 9) ]));
	}

	for my $line (split /\n/, PostgreSQL::Test::Utils::slurp_file($client->{out}))
	{
		my ($lc, $i, $ok, $revision) = split /\|/, $line, -1;
		my $key = "$lc/$i";
		if (!defined $revision || !exists $sent{$key} || $answered{$key}++)
		{
			diag("client $c: unexpected output line: $line");
			next;
		}
		my ($user, $cents) = @{ $sent{$key} };
		if ($ok eq 'true' && $revision =~ /^\d+$/)
		{
			$acked++;
			$expected{$user}{cents} += $cents;
			$expected{$user}{count}++;
			push @{ $expected{$user}{revisions} }, $revision;
		}
		else
		{
			$refused++;
			diag("client $c: command $i to $user not acknowledged: ok=$ok revision=$revision")
			  if $refused <= 20;
		}
	}
}
my $unanswered = $n_clients * $n_commands - scalar(keys %answered);

is($acked, $n_clients * $n_commands,
	'every command was acknowledged');
is($refused, 0, 'no command was refused');
is($unanswered, 0, 'no command went without a reply');

# Within one entity, acknowledged replies carry revisions 1..N, each once:
# the single writer applied each acknowledged command exactly once, in some
# order.
my @bad_revisions;
for my $user (sort keys %expected)
{
	my @revs = sort { $a <=> $b } @{ $expected{$user}{revisions} };
	my @want = (1 .. $expected{$user}{count});
	if ("@revs" ne "@want")
	{
		my %seen;
		my @dups = grep { $seen{$_}++ == 1 } @revs;
		push @bad_revisions,
		  "$user: " . scalar(@revs) . " acknowledged revisions, from $revs[0] to $revs[-1]"
		  . (@dups ? ", duplicated: @dups[0 .. ($#dups < 9 ? $#dups : 9)]" : '');
	}
}
is(scalar(@bad_revisions), 0,
	'acknowledged revisions of each entity are exactly 1..N')
  or diag(join("\n", @bad_revisions));

# ---------------------------------------------------------------------------
# Checks, repeated after each restart.
# ---------------------------------------------------------------------------

# What is stored, and what dc.get_state says, against what was acknowledged.
sub check_stored_totals
{
	my ($when) = @_;

	# Balance as cents: numeric * 100 prints as e.g. "12345.00", which Perl
	# compares numerically; a balance with sub-cent digits would not match.
	my $rows = $node->safe_psql(
		'postgres', qq{
SELECT user_id,
       (state->>'balance')::numeric * 100,
       revision,
       state->>'balance',
       coalesce((dc.get_state(mall_id, user_id)->>'revision'), 'NULL'),
       coalesce((dc.get_state(mall_id, user_id)-> 'state' ->>'balance'), 'NULL')
  FROM durable_cluster.entity_state
 WHERE mall_id = '$mall'
 ORDER BY user_id});

	my @bad;
	my %stored;
	my ($total_cents, $total_revisions) = (0, 0);
	for my $row (split /\n/, $rows)
	{
		my ($user, $cents, $revision, $balance, $gs_revision, $gs_balance) =
		  split /\|/, $row, -1;
		$stored{$user} = 1;
		$total_cents += $cents;
		$total_revisions += $revision;

		my $want = $expected{$user};
		if (!$want)
		{
			push @bad, "$user: stored (balance $balance, revision $revision) but never acknowledged";
			next;
		}
		push @bad, "$user: stored balance $balance, acknowledged "
		  . sprintf('%.2f', $want->{cents} / 100)
		  if $cents != $want->{cents};
		push @bad, "$user: stored revision $revision, acknowledged commands $want->{count}"
		  if $revision != $want->{count};
		push @bad, "$user: dc.get_state revision $gs_revision, stored $revision"
		  if $gs_revision ne $revision;
		push @bad, "$user: dc.get_state balance $gs_balance, stored $balance"
		  if $gs_balance eq 'NULL' || $gs_balance != $balance;
	}
	for my $user (sort keys %expected)
	{
		push @bad, "$user: acknowledged $expected{$user}{count} commands, nothing stored"
		  unless $stored{$user};
	}

	my $want_cents = 0;
	$want_cents += $_->{cents} for values %expected;

	is(scalar(@bad), 0,
		"$when: every entity's stored balance and revision match its acknowledged commands")
	  or diag(join("\n", @bad[ 0 .. ($#bad < 49 ? $#bad : 49) ]));
	is($total_cents, $want_cents,
		"$when: stored balances add up to the acknowledged amounts");
	is($total_revisions, $acked,
		"$when: stored revisions add up to the acknowledged commands");
	return;
}

# What the owning nodes answer to get_state, against what is stored.
sub check_node_state
{
	my ($when) = @_;

	my $rows = $node->safe_psql(
		'postgres', qq{
SELECT e.user_id, e.revision, e.state->>'balance',
       coalesce(r->>'ok', 'NULL'), coalesce(r->>'revision', 'NULL'),
       coalesce(r->'state'->>'balance', 'NULL')
  FROM durable_cluster.entity_state e,
       LATERAL (SELECT dc.send_command(e.mall_id, e.user_id, 'get_state') AS r) s
 WHERE e.mall_id = '$mall'
 ORDER BY e.user_id});

	my @bad;
	for my $row (split /\n/, $rows)
	{
		my ($user, $revision, $balance, $ok, $node_revision, $node_balance) =
		  split /\|/, $row, -1;
		if ($ok ne 'true')
		{
			push @bad, "$user: get_state not ok";
			next;
		}
		push @bad, "$user: node says revision $node_revision, stored $revision"
		  if $node_revision ne $revision;
		push @bad, "$user: node says balance $node_balance, stored $balance"
		  if $node_balance eq 'NULL' || $node_balance != $balance;
	}
	is(scalar(@bad), 0, "$when: get_state through the nodes agrees with storage")
	  or diag(join("\n", @bad[ 0 .. ($#bad < 49 ? $#bad : 49) ]));
	return;
}

check_stored_totals('after load');
check_node_state('after load');

# ---------------------------------------------------------------------------
# Clean restart.
# ---------------------------------------------------------------------------
$node->restart;
wait_for_cluster('after restart');
check_stored_totals('after restart');
check_node_state('after restart');

# ---------------------------------------------------------------------------
# Crash: SIGKILL a client backend.  The postmaster then kills every other
# process, node workers included, and reinitialises shared memory.
# ---------------------------------------------------------------------------
my $log_offset = -s $node->logfile;

my ($victim_out, $victim_err) = ('', '');
my $victim = IPC::Run::start(
	[
		'psql', '-XAtq', '-d',
		$node->connstr('postgres') . ' application_name=dc_crash_victim',
		'-c', 'SELECT pg_sleep(600)'
	],
	'<', \undef, '>', \$victim_out, '2>', \$victim_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE application_name = 'dc_crash_victim' AND state = 'active'},
		'1'),
	'victim session is running');
my $victim_pid = $node->safe_psql(
	'postgres', q{
SELECT pid FROM pg_stat_activity
 WHERE application_name = 'dc_crash_victim' AND state = 'active'});
like($victim_pid, qr/^\d+$/, 'found the victim backend');
is(kill('KILL', $victim_pid), 1, "sent SIGKILL to backend $victim_pid");

# psql loses its connection and exits with an error; that is the point.
eval { $victim->finish; };
isnt($victim->result, 0, 'victim psql lost its server')
  or diag("victim stdout: $victim_out\nvictim stderr: $victim_err");

wait_for_crash_restart($log_offset, 'after crash');
wait_for_cluster('after crash');
check_stored_totals('after crash');
check_node_state('after crash');

# ---------------------------------------------------------------------------
# Life goes on: new commands continue from the stored revision, one by one.
# ---------------------------------------------------------------------------
my $user = user_of(0);
my ($base_revision, $base_cents) = split /\|/,
  $node->safe_psql(
	'postgres', qq{
SELECT revision, (state->>'balance')::numeric * 100
  FROM durable_cluster.entity_state
 WHERE mall_id = '$mall' AND user_id = '$user'});

my @more = (
	[ 'add_balance', '1.00', 100 ],
	[ 'deduct_balance', '0.50', -50 ],
	[ 'add_balance', '0.25', 25 ],);
my $cents = $base_cents;
my $step = 0;
for my $cmd (@more)
{
	my ($command, $amount, $delta) = @$cmd;
	$step++;
	$cents += $delta;
	my $reply = $node->safe_psql(
		'postgres', qq{
SELECT r->>'ok', r->>'revision', (r->'state'->>'balance')::numeric * 100
  FROM (SELECT dc.send_command('$mall', '$user', '$command',
                               '{"amount": $amount}') AS r) s});
	my ($ok, $revision, $reply_cents) = split /\|/, $reply, -1;
	is($ok, 'true', "after crash: $command $amount to $user acknowledged");
	is($revision, $base_revision + $step,
		"after crash: $command $amount gets revision base + $step");
	ok(defined $reply_cents && $reply_cents == $cents,
		"after crash: $command $amount leaves balance " . sprintf('%.2f', $cents / 100))
	  or diag("reply balance (cents): " . ($reply_cents // 'undef'));
}

my ($final_revision, $final_cents) = split /\|/,
  $node->safe_psql(
	'postgres', qq{
SELECT revision, (state->>'balance')::numeric * 100
  FROM durable_cluster.entity_state
 WHERE mall_id = '$mall' AND user_id = '$user'});
is($final_revision, $base_revision + scalar(@more),
	'after crash: stored revision advanced by the new commands');
ok($final_cents == $cents, 'after crash: stored balance includes the new commands')
  or diag("stored cents $final_cents, expected $cents");

# From here on these commands are part of what was acknowledged.
$expected{$user}{cents} = $expected{$user}{cents} + $cents - $base_cents;
$expected{$user}{count} += scalar(@more);
$acked += scalar(@more);

# ---------------------------------------------------------------------------
# Crash under load: SIGKILL the backend of one of several busy clients.
#
# Commands in flight at that moment may or may not have been applied, so the
# exact totals are not known.  What must hold, per entity of this second
# mall:
#
#   stored revision >= the highest revision any client was told about
#   stored revision <= acknowledged commands + commands still in flight
#                      (at most one per client)
#   if the two revisions are equal, the stored balance is the one in that
#   acknowledgement
#
# and the first mall, untouched by this load, must still add up exactly.
# ---------------------------------------------------------------------------
my $mall2 = 'mall002';
my $n2_clients = 4;
my $n2_commands = 5000;
my $n2_entities = 20;

my %sent2;
my @clients2;
for my $c (1 .. $n2_clients)
{
	my $script = "$PostgreSQL::Test::Utils::tmp_check/crash_client_$c.sql";
	my $sql = '';
	for my $i (0 .. $n2_commands - 1)
	{
		my $user2 = sprintf('v%02d', (($i + 5 * $c) % $n2_entities) + 1);
		my $cents2 = 1 + (($c * 3571 + $i * 7907) % 999);
		my $amount = sprintf('%d.%02d', int($cents2 / 100), $cents2 % 100);

		$sent2{"$c/$i"} = $user2;
		$sql .=
		    "SELECT '$c|$i|' || coalesce(r->>'ok', 'null') || '|' || coalesce(r->>'revision', '')"
		  . " || '|' || coalesce(((r->'state'->>'balance')::numeric * 100)::text, '')"
		  . " FROM (SELECT dc.send_command('$mall2', '$user2', 'add_balance', "
		  . "'{\"amount\": $amount}') AS r) s;\n";
	}
	unlink $script;
	PostgreSQL::Test::Utils::append_to_file($script, $sql);

	my $out = "$PostgreSQL::Test::Utils::tmp_check/crash_client_$c.out";
	my $err = "$PostgreSQL::Test::Utils::tmp_check/crash_client_$c.err";
	unlink $out, $err;
	push @clients2,
	  {
		client => $c,
		out => $out,
		err => $err,
		harness => IPC::Run::start(
			[
				'psql', '-XAtq',
				'-v', 'ON_ERROR_STOP=0',
				'-d', $node->connstr('postgres') . " application_name=dc_load_$c",
				'-f', $script
			],
			'<', \undef, '>', $out, '2>', $err,
			IPC::Run::timeout($load_timeout))
	  };
}

# Let the load get going, then pull the plug on client 1's backend.
ok( $node->poll_query_until(
		'postgres', qq{
SELECT coalesce(sum(revision), 0) >= 2000
  FROM durable_cluster.entity_state WHERE mall_id = '$mall2'}),
	'crash under load: load is under way');
$log_offset = -s $node->logfile;
my $load_victim = $node->safe_psql(
	'postgres', q{
SELECT pid FROM pg_stat_activity WHERE application_name = 'dc_load_1'});
like($load_victim, qr/^\d+$/, 'crash under load: found the backend of client 1');
is(kill('KILL', $load_victim), 1,
	"crash under load: sent SIGKILL to backend $load_victim");

# Every client loses its connection in the crash restart, and psql running
# a script gives up then.
for my $client (@clients2)
{
	eval { $client->{harness}->finish; };
	if ($@)
	{
		diag("crash client $client->{client}: $@");
		$client->{harness}->kill_kill;
	}
}

wait_for_crash_restart($log_offset, 'crash under load');
wait_for_cluster('crash under load');
check_stored_totals('crash under load');
check_node_state('crash under load');

# What the clients were told.
my %acked2;    # user => { count => n, max => highest revision, cents => balance at max }
my $n2_acked = 0;
my $n2_lines = 0;
my @bad2;
for my $client (@clients2)
{
	for my $line (split /\n/, PostgreSQL::Test::Utils::slurp_file($client->{out}))
	{
		my ($c, $i, $ok, $revision, $cents2) = split /\|/, $line, -1;
		my $user2 = $sent2{"$c/$i"};
		if (!defined $user2 || !defined $cents2)
		{
			push @bad2, "unexpected output line: $line";
			next;
		}
		$n2_lines++;
		next unless $ok eq 'true';
		$n2_acked++;
		my $ack = $acked2{$user2} //= { count => 0, max => 0, revisions => {} };
		$ack->{count}++;
		push @bad2, "$user2: revision $revision acknowledged twice"
		  if $ack->{revisions}{$revision}++;
		if ($revision > $ack->{max})
		{
			$ack->{max} = $revision;
			$ack->{cents} = $cents2;
		}
	}
}
note("crash under load: $n2_acked of "
	  . ($n2_clients * $n2_commands)
	  . " commands acknowledged before the crash, $n2_lines answered");
cmp_ok($n2_acked, '>', 0,
	'crash under load: some commands were acknowledged before the crash');

my $rows2 = $node->safe_psql(
	'postgres', qq{
SELECT user_id, revision, (state->>'balance')::numeric * 100
  FROM durable_cluster.entity_state
 WHERE mall_id = '$mall2'
 ORDER BY user_id});
my %stored2;
my $n2_stored = 0;
for my $row (split /\n/, $rows2)
{
	my ($user2, $revision, $cents2) = split /\|/, $row, -1;
	$stored2{$user2} = [ $revision, $cents2 ];
	$n2_stored += $revision;
}
note("crash under load: $n2_stored commands stored");
for my $user2 (sort keys %acked2)
{
	my $ack = $acked2{$user2};
	my $st = $stored2{$user2};
	if (!$st)
	{
		push @bad2, "$user2: $ack->{count} commands acknowledged, nothing stored";
		next;
	}
	my ($revision, $cents2) = @$st;
	push @bad2, "$user2: stored revision $revision, but revision $ack->{max} was acknowledged"
	  if $revision < $ack->{max};
	push @bad2,
	  "$user2: stored revision $revision, more than $ack->{count} acknowledged + $n2_clients in flight"
	  if $revision > $ack->{count} + $n2_clients;
	push @bad2,
	  "$user2: stored balance $cents2 cents at revision $revision, acknowledged $ack->{cents}"
	  if $revision == $ack->{max} && $cents2 != $ack->{cents};
}
is(scalar(@bad2), 0,
	'crash under load: nothing acknowledged was lost, nothing applied twice')
  or diag(join("\n", @bad2[ 0 .. ($#bad2 < 49 ? $#bad2 : 49) ]));

# The nodes carry on from what is stored.
my $after = $node->safe_psql(
	'postgres', qq{
SELECT r->>'ok', r->>'revision', e.revision
  FROM durable_cluster.entity_state e,
       LATERAL (SELECT dc.send_command(e.mall_id, e.user_id, 'add_balance',
                                       '{"amount": 0.01}') AS r) s
 WHERE e.mall_id = '$mall2' AND e.user_id = 'v01'});
my ($ok_after, $rev_after, $stored_before) = split /\|/, $after, -1;
is($ok_after, 'true', 'crash under load: a new command is acknowledged');
is($rev_after, $stored_before + 1,
	'crash under load: and gets the stored revision + 1');

# The server must still be healthy enough for a clean shutdown: node
# workers that ignore SIGTERM would make this time out.
ok($node->stop('fast', fail_ok => 1), 'clean shutdown after all this');

done_testing();
