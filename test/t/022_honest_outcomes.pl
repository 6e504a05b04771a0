#
# test/t/022_honest_outcomes.pl
#     A caller cancelled while it waits -- statement_timeout, a cancel
#     request from its client, pg_cancel_backend -- is told the truth:
#
#       - if a node had taken its command, 40003 (may or may not have been
#         applied), with the hint to retry with the command_id; the command
#         then really is applied once the node goes on;
#       - if the command still waited in the node's inbox, 57014, and it is
#         never applied, not even after the node goes on.
#
#     Deterministic: the server has one node, and a registered command
#     whose handler waits for an advisory lock the test holds (the gate)
#     keeps that node inside one batch: a gated command is taken, and
#     every command sent after it waits in the inbox.
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

# no failover or handler timeout while the gate is closed
my $node = DurableClusterLoad::new_server('honest', 1, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '60s'
durable_cluster.ask_timeout = '60s'
durable_cluster.command_timeout = '30s'
});

$node->safe_psql('postgres', q{
CREATE FUNCTION gated(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_lock_shared(4242);
    PERFORM pg_advisory_unlock_shared(4242);
    RETURN state || jsonb_build_object('gated', coalesce((state ->> 'gated')::int, 0) + 1);
END
$$;
SELECT dc.register_command('gated', 'gated(jsonb, jsonb)');
});

# The gate: a session holding the advisory lock until told otherwise.
my ($gate_in, $gate_out) = ('', '');
my $gate;
sub close_gate
{
	$gate_in = "SELECT pg_advisory_lock(4242);\n\\echo closed\n";
	$gate = IPC::Run::start(
		[ $node->installed_command('psql'), '-XAtq', '-d', $node->connstr('postgres') ],
		'<', \$gate_in, '>', \$gate_out,
		IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
	$gate->pump until $gate_out =~ /closed/;
	$gate_out = '';
	return;
}

sub open_gate
{
	$gate_in .= "\\q\n";
	$gate->finish;
	return;
}

# A caller running $sql in the background, with a statement_timeout if
# given; its pid is found by its application_name.
my $callers = 0;
sub start_caller
{
	my ($sql, $statement_timeout) = @_;
	my $name = 'honest_caller_' . ++$callers;
	my %c = (out => '', err => '', name => $name);
	my $options = $statement_timeout ? " options='-c statement_timeout=$statement_timeout'" : '';
	$c{h} = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-v', 'VERBOSITY=verbose',
			'-d', $node->connstr('postgres') . " application_name=$name$options", '-c', $sql
		],
		'>', \$c{out}, '2>', \$c{err},
		IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
	return \%c;
}

# Wait until $n callers of the given names wait in dc.send_command.
sub waiting
{
	my (@c) = @_;
	my $names = join(',', map { "'$_->{name}'" } @c);
	return DurableClusterLoad::poll_until($node, qq{
SELECT count(*) = ${\ scalar @c} FROM pg_stat_activity
 WHERE application_name IN ($names) AND wait_event_type = 'Extension'},
		interval => 0.05);
}

sub pid_of
{
	my ($c) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE application_name = '$c->{name}'");
}

sub revision_of
{
	my ($user) = @_;
	return $node->safe_psql('postgres', "SELECT dc.get_state('h', '$user') ->> 'revision'");
}

# ---- statement_timeout ----
close_gate();
my $taken = start_caller(q{SELECT dc.send_command('h', 'a', 'gated', '{"command_id": "a-1"}')},
	'1s');
$taken->{h}->finish;
like($taken->{err}, qr/ERROR:  40003: canceling statement due to statement timeout after a node had taken the command; it may or may not have been applied/,
	'statement_timeout after the node took the command: 40003');
like($taken->{err}, qr/HINT:  Send it again with the same "command_id"/, 'with the retry hint');

# the node is still inside a's batch: what comes now waits in its inbox
my $queued = start_caller(q{SELECT dc.send_command('h', 'b', 'add_balance', '{"amount": "1.00"}')},
	'1s');
$queued->{h}->finish;
like($queued->{err}, qr/ERROR:  57014: canceling statement due to statement timeout/,
	'statement_timeout while the command waited in the inbox: 57014');
unlike($queued->{err}, qr/40003/, 'not 40003');

# ---- pg_cancel_backend and a client's cancel request, while queued ----
my $cancelled = start_caller(q{SELECT dc.send_command('h', 'c', 'add_balance', '{"amount": "1.00"}')});
my $interrupted = start_caller(q{SELECT dc.send_command('h', 'e', 'add_balance', '{"amount": "1.00"}')});
ok(waiting($cancelled, $interrupted), 'two more callers wait in the inbox');
$node->safe_psql('postgres', 'SELECT pg_cancel_backend(' . pid_of($cancelled) . ')');
$interrupted->{h}->signal('INT');    # psql sends a cancel request
$_->{h}->finish for ($cancelled, $interrupted);
like($cancelled->{err}, qr/ERROR:  57014: canceling statement due to user request/,
	'pg_cancel_backend while queued: 57014');
like($interrupted->{err}, qr/ERROR:  57014: canceling statement due to user request/,
	"the client's cancel request while queued: 57014");

# the node goes on: a's command is applied, the cancelled ones never
open_gate();
is($node->safe_psql('postgres', q{SELECT dc.send_command('h', 'a', 'get_state') #>> '{state,gated}'}),
	'1', "a's command, answered 40003, was applied once the node went on");
is($node->safe_psql('postgres',
		q{SELECT dc.send_command('h', 'a', 'gated', '{"command_id": "a-1"}') ->> 'revision'}),
	'1', 'its retry with the same command_id gets the original reply');
is(revision_of($_), '0', "$_: cancelled while queued, never applied") for qw(b c e);
is($node->safe_psql('postgres',
		q{SELECT dc.send_command('h', 'b', 'add_balance', '{"amount": "1.00"}') ->> 'revision'}),
	'1', 'b: the next command is its first');

# ---- pg_cancel_backend and a client's cancel request, once taken ----
for my $how ('pg_cancel_backend', 'cancel request')
{
	my $user = $how eq 'cancel request' ? 'g' : 'd';
	close_gate();
	my $c = start_caller(qq{SELECT dc.send_command('h', '$user', 'gated', '{}')});
	ok(waiting($c), "$how: the caller waits for its gated command");
	# the node has it once its handler waits for the gate
	ok(DurableClusterLoad::poll_until($node, q{
SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}),
		"$how: the node took the command (its handler waits at the gate)");
	if ($how eq 'pg_cancel_backend')
	{
		$node->safe_psql('postgres', 'SELECT pg_cancel_backend(' . pid_of($c) . ')');
	}
	else
	{
		$c->{h}->signal('INT');
	}
	$c->{h}->finish;
	like($c->{err}, qr/ERROR:  40003: canceling statement due to user request after a node had taken the command/,
		"$how once taken: 40003");
	open_gate();
	ok(DurableClusterLoad::poll_until($node, qq{SELECT dc.get_state('h', '$user') ->> 'revision'},
			expected => '1'),
		"$how once taken: the command was applied when the node went on");
}

$node->stop;
done_testing();
