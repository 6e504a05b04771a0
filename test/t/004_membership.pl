#
# test/t/004_membership.pl
#     Changing membership under concurrent writers, on a server with three
#     static nodes:
#
#   1. dc.add_node() starts a node that joins and gets its share of the
#      shards (balanced: max - min <= 1), with zero failed commands; a node
#      added with a name and roles shows them in dc.members.
#   2. dc.remove_node('node-2') returns once the node has left (status
#      'left'); its worker exits and is not restarted; its shards go to the
#      others, balanced; zero failed commands (commands arriving during the
#      hand-off wait and are served by the new owner).
#   3. Permissions: a plain role may call none of dc.add_node,
#      dc.remove_node, dc.set_number_of_shards (42501); a member of dc_admin
#      may add (and remove) a node.
#   4. A LISTEN client sees joined + rebalanced for the add and left +
#      rebalanced for the remove.
#   5. Bad input: removing an unknown node or NULL, adding a name in use.
#   6. A smart shutdown: the nodes hand their shards off (leave); a fast
#      shutdown under load loses nothing acknowledged;
#      and after the start the nodes rejoin and the totals hold.
#
# Six writers (DurableClusterLoad.pm) send add_balance commands and write
# down every reply; after each part the stored state must equal exactly
# what was acknowledged.
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

my $n_static = 3;
my $n_clients = 6;
my $n_entities = 30;

my $node = DurableClusterLoad::new_server('membership', $n_static, qq{
# generous: zero failed commands is asserted on a small, loaded machine
durable_cluster.ask_timeout = '10s'
});

sub member { return DurableClusterLoad::member($node, $_[0]); }

sub up_members
{
	return split /\n/,
	  $node->safe_psql('postgres',
		"SELECT name FROM dc.members WHERE status = 'up' ORDER BY name");
}

sub shards_of
{
	my ($name) = @_;
	return split /,/,
	  $node->safe_psql('postgres',
		"SELECT string_agg(shard_id::text, ',' ORDER BY shard_id) FROM dc.shards WHERE node = '$name'"
	  );
}

# Run $sql as $user (default: the superuser), expecting an error.  Returns
# (psql exit code, SQLSTATE, message, stderr).
sub try_sql
{
	my ($sql, $user) = @_;
	my ($ret, $out, $err) = $node->psql(
		'postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose', defined $user ? ('-U', $user) : () ]);
	my ($sqlstate, $message) = ('', '');
	($sqlstate, $message) = ($1, $2) if ($err // '') =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/;
	return ($ret, $sqlstate, $message, $err // '');
}

# Shards named in the "moves" of rebalanced events from event $from on,
# moved to a node accepted by $to.
sub moved_shards
{
	my ($listener, $from, $to) = @_;
	my %moved;
	for my $e (($listener->events)[ $from .. scalar($listener->events) - 1 ])
	{
		next unless ($e->{event} // '') eq 'rebalanced';
		for my $m (@{ $e->{moves} || [] })
		{
			$moved{ $m->{shard} } = 1 if defined $m->{node} && $to->($m->{node});
		}
	}
	return \%moved;
}

my $listener = DurableClusterLoad::Listener->new($node);
my @settled_loads;

# ===========================================================================
# 1. dc.add_node() under load.
# ===========================================================================
my $load_add = DurableClusterLoad->start(
	$node,
	name => 'add',
	clients => $n_clients,
	entities => $n_entities,
	seed => 11);
ok($load_add->wait_for_progress(300), 'add: the writers are under way');

my %before_add = map { $_ => 1 } split /\n/,
  $node->safe_psql('postgres', 'SELECT name FROM dc.members');
$listener->poll;
my $from = scalar($listener->events);

my $new = $node->safe_psql('postgres', 'SELECT dc.add_node()');
like($new, qr/^node-\d+$/, "add: dc.add_node() returns the new node's name ($new)");
ok(!$before_add{$new}, "add: $new is a new name");

my ($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query($n_static + 1));
ok($ok, 'add: 4 up members, every shard owned by one of them, balanced (max - min <= 1)')
  or DurableClusterLoad::dump_cluster($node, 'after dc.add_node()');
my $m_new = member($new);
is($m_new->{status}, 'up', "add: $new is up");
cmp_ok($m_new->{shard_count}, '>=', 24, "add: $new owns its share of the shards ($m_new->{shard_count})");
like(
	$node->safe_psql('postgres',
		"SELECT backend_type || ' ' || application_name FROM pg_stat_activity WHERE pid = "
		  . ($m_new->{pid} || 0)),
	qr/^durable_cluster node \Q$new\E$/,
	"add: dc.members.pid of $new is a node worker");
DurableClusterLoad::wait_for_cluster($node, $n_static + 1, 'add');
ok($load_add->wait_for_progress(300), 'add: writers go on with the new node');

# LISTEN: joined, then rebalanced moving shards to the new node.
{
	my $joined = $listener->wait_for(
		sub {
			($_[0]->{event} // '') eq 'joined'
			  && ($_[0]->{node} // '') eq $new
			  && ($_[0]->{incarnation} // -1) == 1;
		},
		from => $from);
	ok($joined, "LISTEN: a joined event for $new incarnation 1")
	  or diag("events seen:\n" . $listener->describe($from));
	ok(!exists $joined->{address}, 'LISTEN: the joined event carries no address')
	  if $joined;
	my $rebalanced = $joined
	  ? $listener->wait_for(
		sub {
			($_[0]->{event} // '') eq 'rebalanced'
			  && grep { ($_->{node} // '') eq $new } @{ $_[0]->{moves} || [] };
		},
		from => $joined->{_seq} + 1)
	  : undef;
	ok($rebalanced, "LISTEN: a rebalanced event after the join moves shards to $new")
	  or diag("events seen:\n" . $listener->describe($from));
	my $moved = moved_shards($listener, $from, sub { $_[0] eq $new });
	my @missing = grep { !$moved->{$_} } shards_of($new);
	is(scalar(@missing), 0, "LISTEN: every shard $new owns was announced as moved to it")
	  or diag("not announced: @missing");
}

# A node with a name and roles of its own, under the same load.
$listener->poll;
$from = scalar($listener->events);
is($node->safe_psql('postgres', q{SELECT dc.add_node('blue', ARRAY['reporting'])}),
	'blue', q{add: dc.add_node('blue', ARRAY['reporting']) returns 'blue'});
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query($n_static + 2));
ok($ok, 'add: 5 up members, balanced')
  or DurableClusterLoad::dump_cluster($node, 'after dc.add_node(blue)');
my $m_blue = member('blue');
is($m_blue->{status}, 'up', 'add: blue is up');
note("add: roles of blue: $m_blue->{roles}");
is( $node->safe_psql(
		'postgres', q{SELECT 'reporting' = ANY (roles) FROM dc.members WHERE name = 'blue'}),
	't',
	'add: dc.members shows the role reporting for blue');
cmp_ok($m_blue->{shard_count}, '>=', 19, "add: blue owns its share of the shards ($m_blue->{shard_count})");
ok( $listener->wait_for(
		sub { ($_[0]->{event} // '') eq 'joined' && ($_[0]->{node} // '') eq 'blue' },
		from => $from),
	'LISTEN: a joined event for blue');
DurableClusterLoad::wait_for_cluster($node, $n_static + 2, 'add blue');
ok($load_add->wait_for_progress(300), 'add: writers go on with five nodes');

$load_add->stop;
ok($load_add->clients_ok, 'add: every writer ran until it was told to stop');
cmp_ok($load_add->acked, '>', 0, 'add: commands were acknowledged');
$load_add->failures_ok('add', max => 0);
push @settled_loads, $load_add
  if DurableClusterLoad::check_stored($node, 'add', [$load_add]);

# ===========================================================================
# 2. dc.remove_node('node-2') under load.
# ===========================================================================
my $load_rm = DurableClusterLoad->start(
	$node,
	name => 'remove',
	clients => $n_clients,
	entities => $n_entities,
	seed => 12);
ok($load_rm->wait_for_progress(300), 'remove: the writers are under way');

my $gone = 'node-2';
my $m_gone = member($gone);
is($m_gone->{status}, 'up', "remove: $gone is up before");
my @gone_shards = shards_of($gone);
$listener->poll;
$from = scalar($listener->events);

my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', "SELECT dc.remove_node('$gone')");
is($ret, 0, "remove: dc.remove_node('$gone') succeeds") or diag($err);
note(sprintf('remove: dc.remove_node took %.2f s', time - $t0));
my $removed_at = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
is(member($gone)->{status}, 'left', "remove: $gone is 'left' when dc.remove_node returns");
is($node->safe_psql('postgres', "SELECT count(*) FROM dc.shards WHERE node = '$gone'"),
	'0', "remove: $gone owns no shard when dc.remove_node returns");

($ok) = DurableClusterLoad::poll_until($node,
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $m_gone->{pid}");
ok($ok, "remove: the worker of $gone (pid $m_gone->{pid}) exits");
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query($n_static + 1));
ok($ok, 'remove: 4 up members, every shard owned by one of them, balanced')
  or DurableClusterLoad::dump_cluster($node, 'after dc.remove_node');
DurableClusterLoad::wait_for_cluster($node, $n_static + 1, 'remove');
ok($load_rm->wait_for_progress(300), "remove: writers go on without $gone");

{
	my $left = $listener->wait_for(
		sub {
			($_[0]->{event} // '') eq 'left'
			  && ($_[0]->{node} // '') eq $gone
			  && ($_[0]->{incarnation} // -1) == $m_gone->{incarnation};
		},
		from => $from);
	ok($left, "LISTEN: a left event for $gone incarnation $m_gone->{incarnation}")
	  or diag("events seen:\n" . $listener->describe($from));
	# Its shards move as soon as it is 'leaving' (another node's reconcile
	# may take them before its own, which comes with 'left'): the rebalance
	# is announced after dc.remove_node began, before or after 'left'.
	my $rebalanced =
	  $listener->wait_for(sub { ($_[0]->{event} // '') eq 'rebalanced' }, from => $from);
	ok($rebalanced, "LISTEN: a rebalanced event after dc.remove_node('$gone') began")
	  or diag("events seen:\n" . $listener->describe($from));
	my $moved = moved_shards($listener, $from, sub { $_[0] ne $gone });
	my @missing = grep { !$moved->{$_} } @gone_shards;
	is(scalar(@missing), 0,
		"LISTEN: every shard of $gone was announced as moved to another node")
	  or diag("not announced: @missing");
}

$load_rm->stop;
ok($load_rm->clients_ok, 'remove: every writer ran until it was told to stop');
cmp_ok($load_rm->acked, '>', 0, 'remove: commands were acknowledged');
$load_rm->failures_ok('remove', max => 0);
DurableClusterLoad::check_stored($node, 'remove: part 1 untouched', [@settled_loads])
  if @settled_loads;
push @settled_loads, $load_rm
  if DurableClusterLoad::check_stored($node, 'remove', [$load_rm]);

# Not restarted: the postmaster restarts an exited node worker after one
# second; give it three before looking.
DurableClusterLoad::poll_until($node,
	"SELECT clock_timestamp() > '$removed_at'::timestamptz + interval '3 s'");
my $m_gone_after = member($gone);
is($m_gone_after->{status}, 'left', "remove: $gone stays 'left'");
is($m_gone_after->{incarnation}, $m_gone->{incarnation}, "remove: $gone did not rejoin");
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'durable_cluster node' AND application_name = '$gone'}),
	'0',
	"remove: no worker runs for $gone");

# ===========================================================================
# 3. Permissions.
# ===========================================================================
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_roles WHERE rolname = 'dc_admin'}),
	'1', 'permissions: the extension created the role dc_admin');
$node->safe_psql(
	'postgres', q{
CREATE ROLE dc_plain LOGIN;
CREATE ROLE dc_ops LOGIN IN ROLE dc_admin;});

my @members_before = up_members();
for my $call (
	q{SELECT dc.add_node()},
	q{SELECT dc.add_node('sneaky', ARRAY['x'])},
	q{SELECT dc.remove_node('node-1')},
	q{SELECT dc.set_number_of_shards(100)})
{
	my ($r, $sqlstate, $message, $stderr) = try_sql($call, 'dc_plain');
	isnt($r, 0, "permissions: a plain role cannot run $call");
	is($sqlstate, '42501', "permissions: $call by a plain role fails with 42501")
	  or diag("stderr: $stderr");
}
is(join(',', up_members()), join(',', @members_before),
	'permissions: the refused calls changed no member');

{
	my ($r, $o, $e) = $node->psql('postgres', q{SELECT dc.add_node('ops-node')},
		extra_params => [ '-U', 'dc_ops' ]);
	is($r, 0, 'permissions: a member of dc_admin may call dc.add_node') or diag($e);
	is($o, 'ops-node', 'permissions: and gets the name of its node');
	($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query($n_static + 2));
	ok($ok, 'permissions: the node added by dc_ops joined, balanced')
	  or DurableClusterLoad::dump_cluster($node, 'after dc.add_node by dc_ops');
	($r, $o, $e) = $node->psql('postgres', q{SELECT dc.remove_node('ops-node')},
		extra_params => [ '-U', 'dc_ops' ]);
	is($r, 0, 'permissions: a member of dc_admin may call dc.remove_node') or diag($e);
	is(member('ops-node')->{status}, 'left', 'permissions: ops-node left');
	($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query($n_static + 1));
	ok($ok, 'permissions: back to 4 up members, balanced');
}

# ===========================================================================
# 5. Bad input.
# ===========================================================================
{
	my ($r, $sqlstate, $message, $stderr) = try_sql(q{SELECT dc.remove_node('no-such-node')});
	note("bad input: dc.remove_node('no-such-node'): $sqlstate $message");
	isnt($r, 0, q{bad input: dc.remove_node('no-such-node') fails});
	like($stderr, qr/ERROR:/, q{bad input: dc.remove_node('no-such-node') raises an ERROR});
	like($sqlstate, qr/^(22023|42704)$/, q{bad input: dc.remove_node('no-such-node'): SQLSTATE 22023 or 42704})
	  or diag("stderr: $stderr");
	like($message, qr/no-such-node/, 'bad input: the message names the node');

	($r, $sqlstate, $message, $stderr) = try_sql(q{SELECT dc.remove_node(NULL)});
	note("bad input: dc.remove_node(NULL): $sqlstate $message");
	isnt($r, 0, 'bad input: dc.remove_node(NULL) fails');
	like($stderr, qr/ERROR:/, 'bad input: dc.remove_node(NULL) raises an ERROR');
	like($sqlstate, qr/^(22023|42704|22004)$/,
		'bad input: dc.remove_node(NULL): SQLSTATE 22023, 42704 or 22004 (null_value_not_allowed)')
	  or diag("stderr: $stderr");
	like($message, qr/NULL|null|name/, 'bad input: the message says what is wrong');

	for my $taken ('node-1', 'blue')
	{
		my @before = up_members();
		($r, $sqlstate, $message, $stderr) = try_sql("SELECT dc.add_node('$taken')");
		note("bad input: dc.add_node('$taken'): $sqlstate $message");
		isnt($r, 0, "bad input: dc.add_node('$taken') (name in use) fails");
		like($stderr, qr/ERROR:/, "bad input: dc.add_node('$taken') raises an ERROR");
		like($message, qr/\Q$taken\E/, 'bad input: the message names the node');
		is(join(',', up_members()), join(',', @before), "bad input: dc.add_node('$taken') changed no member");
	}
	is( $node->safe_psql(
			'postgres', q{
SELECT count(*) FROM dc.members WHERE name = 'node-1' AND status = 'up'}),
		'1',
		'bad input: node-1 is still up, once');
}

$listener->quit;

# ===========================================================================
# 6. Shutdowns.  A smart shutdown waits for the client sessions to end; then
#    the nodes leave, handing their shards off.  A fast shutdown ends the
#    nodes' store sessions (on this server) together with everything else:
#    nobody is left to hand off to, and nothing acknowledged may be lost.
# ===========================================================================
my $up_without_worker = q{
SELECT string_agg(m.name, ', ' ORDER BY m.name) FROM dc.members m
 WHERE m.status = 'up'
   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                    WHERE a.pid = m.pid AND a.backend_type = 'durable_cluster node')};

sub up_incarnations
{
	return map { split /\|/ } split /\n/,
	  $node->safe_psql('postgres', "SELECT name, incarnation FROM dc.members WHERE status = 'up'");
}

# After a start: the static nodes (durable_cluster.nodes) rejoin as new
# incarnations; nodes added with dc.add_node are not started again and none
# of them may stay "up" without a worker.
sub check_restart
{
	my ($label, %up_before) = @_;
	my @static_back = grep { exists $up_before{$_} } map { "node-$_" } 1 .. $n_static;
	my ($ok) = DurableClusterLoad::poll_until(
		$node, qq{
SELECT count(*) = @{[ scalar @static_back ]} FROM dc.members
 WHERE status = 'up' AND (@{[ join(' OR ', map { "(name = '$_' AND incarnation > $up_before{$_})" } @static_back) ]})});
	ok($ok, "$label: after the start, the nodes " . join(', ', @static_back) . ' rejoined as new incarnations')
	  or DurableClusterLoad::dump_cluster($node, "$label: after the restart");
	($ok) = DurableClusterLoad::poll_until($node, "SELECT coalesce(($up_without_worker), '') = ''");
	ok($ok, "$label: no member is \"up\" without a running worker");
	note("$label: members after the start: "
		  . $node->safe_psql('postgres',
			"SELECT string_agg(name || ' ' || status || ' ' || incarnation, ', ' ORDER BY name) FROM dc.members"));
	# every static node comes back at a start, those removed before too;
	# nodes added at runtime do not
	DurableClusterLoad::wait_for_cluster($node, $n_static, "$label: after the start");
	return;
}

# 6a. Smart shutdown: the load ends first (a smart shutdown waits for it).
my $load_sd = DurableClusterLoad->start(
	$node,
	name => 'smart',
	clients => $n_clients,
	entities => $n_entities,
	seed => 13);
ok($load_sd->wait_for_progress(300), 'smart shutdown: the writers are under way');
$load_sd->stop;
ok($load_sd->clients_ok, 'smart shutdown: every writer ran until it was told to stop');
$load_sd->failures_ok('smart shutdown', max => 0);

my %up_before = up_incarnations();
note('smart shutdown: up before: ' . join(', ', map { "$_ ($up_before{$_})" } sort keys %up_before));
my $log_offset = -s $node->logfile;
$node->stop('smart');
my $log = slurp_file($node->logfile, $log_offset);
my @not_left = grep { $log !~ /durable_cluster \Q$_\E left the cluster/ } sort keys %up_before;
my @node_lines = grep { /durable_cluster|background worker/ } split /\n/, $log;
is(scalar(@not_left), 0,
	'smart shutdown: every node that was up left the cluster (handed its shards off): '
	  . join(', ', sort keys %up_before))
  or diag("no 'left the cluster' in the log for: @not_left");
my @complaints = grep { /durable_cluster.*(failed|PANIC)|(failed|PANIC).*durable_cluster/ } @node_lines;
is(scalar(@complaints), 0, 'smart shutdown: no node reported a failure while shutting down');
diag("smart shutdown: the log of the nodes during the shutdown:\n" . join("\n", @node_lines))
  if @not_left || @complaints;

$node->start;
check_restart('smart shutdown', %up_before);
DurableClusterLoad::check_stored($node, 'smart shutdown', [$load_sd]);

# 6b. Fast shutdown under load, with a node added at runtime.
# (the static nodes and green: counted in the table, a static node that
# was removed before the restart, or green, may not have joined yet)
$node->safe_psql('postgres', q{SELECT dc.add_node('green')});
DurableClusterLoad::wait_for_cluster($node, $n_static + 1, 'fast shutdown: green added');
my $load_fast = DurableClusterLoad->start(
	$node,
	name => 'fast',
	clients => $n_clients,
	entities => $n_entities,
	seed => 15);
ok($load_fast->wait_for_progress(300), 'fast shutdown: the writers are under way');
%up_before = up_incarnations();
$node->stop('fast');
$load_fast->wait;
$node->start;
check_restart('fast shutdown', %up_before);
is($node->safe_psql('postgres', "SELECT status FROM dc.members WHERE name = 'green'"),
	'down', 'fast shutdown: green, added at runtime and not restarted, is down');

cmp_ok(scalar($load_fast->in_flight), '<=', $n_clients, 'fast shutdown: at most one command in flight per writer');
# Commands caught by the shutdown may fail (connection or shutdown errors,
# or the owner gone); nothing more is asked of them than not to be stored.
$load_fast->failures_ok('fast shutdown', allowed => [ '55000', '40003', qr/^(08|57)/ ]);
DurableClusterLoad::check_stored($node, 'fast shutdown', [$load_fast], in_flight => 1);
DurableClusterLoad::check_stored($node, 'shutdowns: earlier parts untouched', [@settled_loads])
  if @settled_loads;

# The restarted cluster serves new commands exactly.
my $load_after = DurableClusterLoad->start(
	$node,
	name => 'after',
	clients => $n_clients,
	entities => $n_entities,
	seed => 14);
ok($load_after->wait_for_progress(300), 'after the restart: the writers are served');
$load_after->stop;
ok($load_after->clients_ok, 'after the restart: every writer ran until it was told to stop');
$load_after->failures_ok('after the restart', max => 0);
DurableClusterLoad::check_stored($node, 'after the restart', [$load_after]);

ok($node->stop('fast', fail_ok => 1), 'clean shutdown at the end');

done_testing();
