#
# test/t/029_fair_at_commit.pl
#     Commands sent at commit, one tenant against another (at_commit.c):
#
#       - every payload is bounded: a restricted role's command with a
#         payload over 2048 bytes is refused at once (54000), nothing kept;
#       - a login role may keep max_pending_per_role commands waiting (500
#         here): a transaction sending one more fails with 53400 and keeps
#         none of its commands;
#       - rows with huge payloads, as 0.1 and 0.2 let a client queue them (written
#         here by hand: 20 of 4 MB), fail without being read: the saga
#         worker's private memory stays small while it goes through them;
#       - tenant a floods (its limit's worth of commands, on 100 entities)
#         and tenant b sends one command: b's is applied within seconds,
#         while most of a's still wait, and then every one of a's is
#         applied exactly once, in order per entity.
#
#     The delay of b's command, how many of a's went before it and how fast
#     a's went are printed (notes), for docs/security.md.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $limit = 500;
my $node = DurableClusterLoad::new_server('fair', 3, qq{
durable_cluster.max_pending_per_role = $limit
});

$node->safe_psql('postgres', q{
CREATE ROLE tenant_a LOGIN IN ROLE dc_client;
CREATE ROLE tenant_b LOGIN IN ROLE dc_client;
SELECT dc.restrict_role('tenant_a', '{fair_a}');
SELECT dc.restrict_role('tenant_b', '{fair_b}');
});
# (SET SESSION AUTHORIZATION stands for the tenant's login)
my $as_a = 'SET SESSION AUTHORIZATION tenant_a;';
my $as_b = 'SET SESSION AUTHORIZATION tenant_b;';
my $waiting = q{SELECT count(*) FROM durable_cluster.pending_commands WHERE status = 'pending'};

# ---- bounded input ----
my ($ret, $out, $err) = $node->psql('postgres', $as_a . q{
SELECT dc.send_command_at_commit('fair_a', 'u1', 'add_balance',
                                 jsonb_build_object('amount', 1, 'pad', repeat('x', 3000)))},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  54000: payload of command "add_balance" is \d+ bytes long; the limit is 2048 bytes/,
	'a payload over the limit is refused at once (54000)');
is($node->safe_psql('postgres', 'SELECT count(*) FROM durable_cluster.pending_commands'), '0',
	'and nothing was kept');

# ---- the limit per login ----
sub flood_sql
{
	my ($count, $prefix) = @_;
	return qq{SELECT count(dc.send_command_at_commit('fair_a', 'u' || (g % 100), 'add_balance',
                   jsonb_build_object('amount', 1, 'command_id', '$prefix-' || g)))
  FROM generate_series(1, $count) g};
}
($ret, $out, $err) = $node->psql('postgres', $as_a . flood_sql($limit + 1, 'over'),
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err,
	qr/ERROR:  53400: role "tenant_a" has $limit commands sent at commit waiting on this server; the limit is $limit/,
	"one command more than max_pending_per_role ($limit) fails with 53400");
is($node->safe_psql('postgres', 'SELECT count(*) FROM durable_cluster.pending_commands'), '0',
	'and its transaction kept none');

# ---- huge rows of 0.1 and 0.2: failed without being read ----
my $saga_pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'durable_cluster sagas'});
like($saga_pid, qr/^\d+$/, 'the saga worker runs');

# the worker's private memory (anonymous pages, in kB) right now
sub worker_kb
{
	open(my $fh, '<', "/proc/$saga_pid/status") or return 0;
	my ($kb) = map { /^RssAnon:\s+(\d+) kB/ ? $1 : () } <$fh>;
	close $fh;
	return $kb // 0;
}
my $before_kb = worker_kb();
kill 'STOP', $saga_pid;
$node->safe_psql('postgres', q{
INSERT INTO durable_cluster.pending_commands (id, mall_id, user_id, command, payload, command_id, role_name)
SELECT nextval('durable_cluster.pending_commands_id_seq'), 'fair_a', 'big' || g, 'add_balance',
       jsonb_build_object('amount', 1, 'pad',
                          (SELECT string_agg(md5(g::text || '-' || h::text), '') FROM generate_series(1, 131072) h)),
       'big-' || g, 'tenant_a'
  FROM generate_series(1, 20) g});
kill 'CONT', $saga_pid;
my $peak_kb = $before_kb;
my $deadline = time + 60;
while (time < $deadline)
{
	my $kb = worker_kb();
	$peak_kb = $kb if $kb > $peak_kb;
	last if $node->safe_psql('postgres', $waiting) eq '0';
	usleep(20_000);
}
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE status = 'failed' AND sqlstate = '54000') FROM durable_cluster.pending_commands
 WHERE command_id LIKE 'big-%'}), '20', 'the 20 rows of 4 MB payloads failed with 54000');
note("saga worker private memory: $before_kb kB before, at most $peak_kb kB while it went through 80 MB of payloads");
cmp_ok($peak_kb - $before_kb, '<', 16 * 1024, 'the worker read none of them: its memory grew by less than 16 MB');
$node->safe_psql('postgres', 'DELETE FROM durable_cluster.pending_commands');

# ---- a floods, b sends one ----
kill 'STOP', $saga_pid;
$node->safe_psql('postgres', $as_a . flood_sql($limit, 'a'));
is($node->safe_psql('postgres', $waiting), $limit, "tenant a queued $limit commands (its limit)");
my $b_sent = time;
is($node->safe_psql('postgres', $as_b . q{
BEGIN;
SELECT dc.send_command_at_commit('fair_b', 'u1', 'add_balance', '{"amount": 5, "command_id": "b-1"}');
COMMIT;}), 'b-1', 'then tenant b sends one');
kill 'CONT', $saga_pid;
my ($ok, $b_delay) = DurableClusterLoad::poll_until($node, q{
SELECT status FROM durable_cluster.pending_commands WHERE command_id = 'b-1'},
	expected => 'done', timeout => 60, interval => 0.01, since => $b_sent);
ok($ok, 'tenant b\'s command was applied');
note(sprintf('tenant b\'s command was applied %.2f s after its commit, behind %d of tenant a\'s',
		$b_delay, $limit));
cmp_ok($b_delay, '<', 10, 'within seconds, not behind tenant a\'s queue');
is($node->safe_psql('postgres', q{SELECT dc.get_state('fair_b', 'u1') #>> '{state,balance}'}), '5.00',
	'b\'s balance holds its command');

($ok) = DurableClusterLoad::poll_until($node, $waiting, expected => '0', timeout => 120);
ok($ok, 'every one of tenant a\'s commands was sent');
# (the outcomes of a round have the time of its transaction)
my $a_before_b = $node->safe_psql('postgres', q{
SELECT count(*) FROM durable_cluster.pending_commands
 WHERE mall_id = 'fair_a'
   AND done_at < (SELECT done_at FROM durable_cluster.pending_commands WHERE command_id = 'b-1')});
note("$a_before_b of tenant a's commands were done before tenant b's");
cmp_ok($a_before_b, '<', $limit / 2, 'b\'s went before most of a\'s, which were queued before it');
note('tenant a\'s commands went at ' . $node->safe_psql('postgres', q{
SELECT round(count(*) / greatest(extract(epoch FROM max(done_at) - min(done_at)), 0.001))
  FROM durable_cluster.pending_commands WHERE mall_id = 'fair_a'}) . ' a second');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE status = 'done') || ' ' || count(*)
  FROM durable_cluster.pending_commands WHERE mall_id = 'fair_a'}), "$limit $limit", 'and done');
is($node->safe_psql('postgres', q{
SELECT sum((dc.get_state('fair_a', 'u' || g) #>> '{state,balance}')::numeric) || ' '
       || sum((dc.get_state('fair_a', 'u' || g) ->> 'revision')::int)
  FROM generate_series(0, 99) g}), "$limit.00 $limit", 'applied exactly once each');
# an entity's commands in the order they were recorded: its replies' revisions
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
  SELECT user_id, id, (reply ->> 'revision')::int AS revision,
         row_number() OVER (PARTITION BY user_id ORDER BY id) AS nth
    FROM durable_cluster.pending_commands WHERE mall_id = 'fair_a') s
 WHERE revision <> nth}), '0', 'in the order they were recorded, per entity');

$node->stop;
done_testing();
