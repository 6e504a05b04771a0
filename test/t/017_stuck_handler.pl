#
# test/t/017_stuck_handler.pl
#     A registered command's handler that never returns -- it loops and
#     catches the cancel -- cannot jam its node: its command fails (not
#     applied) a little after command_timeout, the node is never marked
#     down, the store backend that ran it ends and frees its locks, the
#     node serves the next commands, and leaves when asked.  A handler that
#     only sleeps too long fails its command with 57014.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use IPC::Run;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('stuck', 2, qq{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '3s'
durable_cluster.command_timeout = '500ms'
durable_cluster.ask_timeout = '20s'
});

$node->safe_psql('postgres', q{
CREATE FUNCTION stuck(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        BEGIN
            PERFORM pg_sleep(0.05);
        EXCEPTION WHEN query_canceled THEN
            NULL;       -- keep going: a hostile or buggy handler
        END;
    END LOOP;
END
$$;
CREATE FUNCTION sleepy(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT pg_sleep(10); SELECT state $$;
SELECT dc.register_command('stuck', 'stuck(jsonb, jsonb)');
SELECT dc.register_command('sleepy', 'sleepy(jsonb, jsonb)');
});

my $incarnations = q{
SELECT string_agg(name || ':' || status || ':' || incarnation, ',' ORDER BY name)
  FROM dc.members};
my $before = $node->safe_psql('postgres', $incarnations);

my $owner = $node->safe_psql('postgres',
	q{SELECT node FROM dc.shards WHERE shard_id = dc.shard_id('m', 'stuck-1')});
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT dc.send_command('m', 'stuck-1', 'stuck')}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
my $took = time - $t0;
isnt($ret, 0, 'the command of a handler that never returns fails');
like($err, qr/did not answer within/, 'its node gave up waiting for the store');
cmp_ok($took, '<', 3, "it failed well before failure_timeout (took ${took}s)");
is($node->safe_psql('postgres', q{SELECT dc.get_state('m', 'stuck-1') ->> 'revision'}), '0',
	'nothing was applied');

ok(DurableClusterLoad::poll_until($node, q{
SELECT count(*) = 0 FROM pg_stat_activity
 WHERE query LIKE '%run_command%' AND state = 'active' AND pid <> pg_backend_pid()},
		timeout => 30),
	'the store backend that ran the handler ended');
is($node->safe_psql('postgres', $incarnations), $before,
	'no node was marked down or rejoined');
is($node->safe_psql('postgres',
		q{SELECT dc.send_command('m', 'stuck-1', 'login') ->> 'result'}),
	'logged_in', 'the node serves the next command for that entity');

($ret, $out, $err) = $node->psql('postgres',
	q{SELECT dc.send_command('m', 'sleepy-1', 'sleepy')});
like($err, qr/statement timeout|canceling statement/, 'a handler that sleeps too long is cancelled');
(undef, undef, $err) = $node->psql('postgres',
	q{SELECT dc.send_command('m', 'sleepy-1', 'sleepy')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  57014:/, 'with 57014');
is($node->safe_psql('postgres', q{SELECT dc.get_state('m', 'sleepy-1') ->> 'revision'}), '0',
	'and nothing was applied');

# several stuck commands at once, while the owner is asked to leave
my @callers;
for my $i (1 .. 4)
{
	my ($o, $e) = ('', '');
	push @callers, IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'),
		  '-c', "SELECT dc.send_command('m', 'stuck-1', 'stuck')" ],
		'>', \$o, '2>', \$e);
}
DurableClusterLoad::poll_until($node, q{
SELECT count(*) > 0 FROM pg_stat_activity
 WHERE query LIKE '%run_command%' AND state = 'active' AND pid <> pg_backend_pid()},
	timeout => 30);
$t0 = time;
$node->safe_psql('postgres', "SELECT dc.remove_node('$owner')");
$took = time - $t0;
cmp_ok($took, '<', 10, "the owner left while stuck handlers were sent to it (took ${took}s)");
$_->finish for @callers;
ok(DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(1), timeout => 30),
	'the other node took every shard');
is($node->safe_psql('postgres',
		q{SELECT dc.send_command('m', 'stuck-1', 'logout') ->> 'result'}),
	'logged_out', 'and serves the entity');

$node->stop;
done_testing();
