#
# test/t/010_saga_transfers.pl
#     Transfers survive failures: no money is made or lost, whatever stops
#     a saga half way.
#
# 1. 8 clients run random transfers among 100 funded accounts for 30 s
#    while one node is paused (SIGSTOP, long enough to be failed over,
#    then SIGCONT) and another is removed.  A tenth of the transfers go to
#    a vault whose balance is at the maximum: their add is rejected and
#    the source refunded.
# 2. Clients transfer while the server crashes (immediate stop) and
#    restarts.
# 3. A saga certainly stopped between its deduct and its add: the target's
#    node is paused and then killed, which crash-restarts the server; the
#    saga worker must complete it afterwards.
#
# After each, once the saga worker has taken up what callers left behind:
# the sum of balances is the initial sum, no balance is negative, every
# saga is completed or compensated (those to the vault compensated), and
# every account's balance is exactly its initial funds plus the completed
# sagas into it minus those out of it.
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

my $accounts = 100;
my $funds = 1000;

my $node = DurableClusterLoad::new_server('sagas', 3, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.ask_timeout = '3s'
restart_after_crash = on
});

# transfers to the vault are rejected (its balance is at the maximum), so
# their sagas are compensated: a tenth of them, under the same failures
$node->safe_psql('postgres', q{
CREATE FUNCTION max_out(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state || '{"balance": 9999999999999999.99}' $$;
SELECT dc.register_command('max_out', 'max_out(jsonb, jsonb)');
SELECT dc.send_command('bank', 'vault', 'max_out');
});
is($node->safe_psql('postgres', qq{
SELECT count(*) FILTER (WHERE (dc.send_command('bank', 'acct' || g, 'add_balance',
                                              jsonb_build_object('amount', $funds)) ->> 'ok')::boolean)
  FROM generate_series(1, $accounts) g}), $accounts, "$accounts accounts funded");

# A client: random transfers between two different accounts for $seconds;
# errors (timeouts while a node is paused, the crash) are counted, not fatal.
sub start_clients
{
	my ($n, $seconds) = @_;
	my @clients;
	for my $c (1 .. $n)
	{
		my %client = (out => '', err => '');
		my $sql = qq{
DO \$\$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '$seconds seconds';
    a int; b int; r jsonb; n_done int := 0; n_err int := 0;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        a := 1 + floor(random() * $accounts);
        b := 1 + (a + floor(random() * ($accounts - 1))::int) % $accounts;
        BEGIN
            r := dc.transfer('bank', 'acct' || a, 'bank',
                             CASE WHEN random() < 0.1 THEN 'vault' ELSE 'acct' || b END,
                             round((1 + random() * 300)::numeric, 2));
            n_done := n_done + 1;
        EXCEPTION WHEN OTHERS THEN
            n_err := n_err + 1;
        END;
    END LOOP;
    RAISE NOTICE 'client $c: % transfers answered, % failed', n_done, n_err;
END
\$\$;};
		$client{h} = IPC::Run::start(
			[
				$node->installed_command('psql'), '-Xq', '-d', $node->connstr('postgres'),
				'-c', $sql
			],
			'>', \$client{out}, '2>', \$client{err},
			IPC::Run::timeout($seconds + 3 * $PostgreSQL::Test::Utils::timeout_default));
		push @clients, \%client;
	}
	return @clients;
}

sub finish_clients
{
	my ($answered, $failed) = (0, 0);
	for my $client (@_)
	{
		eval { $client->{h}->finish; };
		if ($client->{err} =~ /(\d+) transfers answered, (\d+) failed/)
		{
			$answered += $1;
			$failed += $2;
		}
	}
	note("clients: $answered transfers answered, $failed failed (an error, not a rejection)");
	return $answered;
}

# The invariants, once no saga is running any more.
sub check_books
{
	my ($when) = @_;
	my ($ok) = DurableClusterLoad::poll_until($node,
		q{SELECT count(*) = 0 FROM dc.sagas WHERE status = 'running'}, timeout => 120);
	ok($ok, "$when: every saga was completed or compensated");
	is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE status = 'completed') > 0
   AND count(*) FILTER (WHERE status = 'compensated') > 0
   AND count(*) FILTER (WHERE status = 'compensated') = count(*) FILTER (WHERE to_user = 'vault')
  FROM dc.sagas}),
		't', "$when: transfers to the vault, and only those, were compensated");
	is($node->safe_psql('postgres',
		q{SELECT dc.get_state('bank', 'vault') -> 'state' ->> 'balance'}),
		'9999999999999999.99', "$when: the vault's balance did not change");
	my $balances = qq{
SELECT g AS acct, (dc.get_state('bank', 'acct' || g) -> 'state' ->> 'balance')::numeric AS balance
  FROM generate_series(1, $accounts) g};
	my $log = slurp_file($node->logfile);
	my $resumed = () = $log =~ /durable_cluster: saga \d+ resumed/g;
	note("$when: the saga worker resumed $resumed sagas so far");
	is($node->safe_psql('postgres', "SELECT sum(balance) FROM ($balances) b"),
		$accounts * $funds . '.00', "$when: the sum of balances is the initial sum");
	is($node->safe_psql('postgres', "SELECT count(*) FROM ($balances) b WHERE balance < 0"),
		0, "$when: no balance is negative");
	is($node->safe_psql('postgres', qq{
WITH moved AS (
    SELECT substr(from_user, 5)::int AS acct, -amount AS delta FROM dc.sagas WHERE status = 'completed'
    UNION ALL
    SELECT substr(to_user, 5)::int, amount FROM dc.sagas WHERE status = 'completed')
SELECT count(*) FROM ($balances) b
 WHERE balance <> $funds + coalesce((SELECT sum(delta) FROM moved m WHERE m.acct = b.acct), 0)}),
		0, "$when: each balance is its funds plus completed sagas in, minus out");
	return;
}

# 1. a paused node and a removed one under 8 clients
my @clients = start_clients(8, 30);
my ($ok) = DurableClusterLoad::poll_until($node, q{SELECT count(*) >= 50 FROM dc.sagas});
ok($ok, 'transfers are under way');

my $paused = DurableClusterLoad::member($node, 'node-1');
ok(DurableClusterLoad::pause_node($node, $paused->{pid}), 'paused node-1');
($ok) = DurableClusterLoad::poll_until($node, q{
SELECT count(*) = 0 FROM dc.shards WHERE node = 'node-1'}, timeout => 60);
ok($ok, 'node-1\'s shards were failed over while it was paused');
kill('CONT', $paused->{pid});
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(3),
	timeout => 60);
ok($ok, 'node-1 rejoined');

$node->safe_psql('postgres', q{SELECT dc.remove_node('node-2')});
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(2),
	timeout => 60);
ok($ok, 'node-2 was removed and its shards moved');

my $answered = finish_clients(@clients);
ok($answered > 100, "the clients got $answered transfers answered");
my $sagas = $node->safe_psql('postgres', 'SELECT count(*) FROM dc.sagas');
note("sagas recorded: $sagas");
check_books('after the pause and the removal');

# 2. a crash of the whole server in the middle of transfers
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM dc.sagas');
@clients = start_clients(4, 8);
($ok) = DurableClusterLoad::poll_until($node,
	qq{SELECT count(*) >= $before + 30 FROM dc.sagas});
ok($ok, 'transfers are under way again');
$node->stop('immediate');
finish_clients(@clients);
$node->start;
# a restart brings back the static nodes, node-2 included
($ok) = DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(3),
	timeout => 60);
ok($ok, 'the nodes came back after the crash');
check_books('after the crash');

# 3. made certain: a saga stopped by a crash between its deduct and its add.
# The target's node is paused, so the add waits in its inbox; once the
# deduct is recorded, the paused node is killed, which crash-restarts the
# server before any failover could take the add elsewhere.
my $src_owner = $node->safe_psql('postgres',
	q{SELECT node FROM dc.shards WHERE shard_id = dc.shard_id('crash', 'src')});
my $dst = $node->safe_psql('postgres', qq{
SELECT 'dst' || i FROM generate_series(1, 1000) i
 WHERE (SELECT node FROM dc.shards WHERE shard_id = dc.shard_id('crash', 'dst' || i))
       <> '$src_owner'
 ORDER BY i LIMIT 1});
my $dst_owner = $node->safe_psql('postgres',
	qq{SELECT node FROM dc.shards WHERE shard_id = dc.shard_id('crash', '$dst')});
$node->safe_psql('postgres',
	q{SELECT dc.send_command('crash', 'src', 'add_balance', '{"amount": 50}')});
my $victim = DurableClusterLoad::member($node, $dst_owner);
ok(DurableClusterLoad::pause_node($node, $victim->{pid}), "paused $dst_owner, owner of the target");
my ($out, $err) = ('', '');
my $transfer = IPC::Run::start(
	[
		$node->installed_command('psql'), '-XAtq', '-d', $node->connstr('postgres'),
		'-c', "SELECT dc.transfer('crash', 'src', 'crash', '$dst', 20)"
	],
	'>', \$out, '2>', \$err,
	IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
($ok) = DurableClusterLoad::poll_until($node, q{
SELECT step || ' ' || status FROM dc.sagas WHERE from_mall = 'crash'},
	expected => 'deducted running', interval => 0.02);
ok($ok, 'the deduct was applied and recorded; the add waits at the paused node');
my $log_offset = -s $node->logfile;
kill('KILL', $victim->{pid});
DurableClusterLoad::wait_for_crash_restart($node, $log_offset, 'node killed mid-saga');
eval { $transfer->finish; };
unlike($out, qr/completed/, 'the caller did not see the transfer completed');
($ok) = DurableClusterLoad::poll_until($node, q{
SELECT step || ' ' || status FROM dc.sagas WHERE from_mall = 'crash'},
	expected => 'added completed', timeout => 60);
ok($ok, 'after the crash restart the saga worker completed the saga');
is($node->safe_psql('postgres', qq{
SELECT (dc.get_state('crash', 'src') -> 'state' ->> 'balance') || ' ' || (dc.get_state('crash', '$dst') -> 'state' ->> 'balance')}),
	'30.00 20.00', 'the amount left the source once and reached the target once');
like(slurp_file($node->logfile, $log_offset), qr/saga \d+ resumed at step deducted/,
	'the saga worker logged the saga it resumed');

$node->stop;
done_testing();
