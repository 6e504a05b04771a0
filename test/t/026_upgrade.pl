#
# test/t/026_upgrade.pl
#     An upgrade in place from each release (0.1, 0.2) to the version of
#     this tree, as a user makes it: a server runs the release's library
#     (built from the release's own sources) with entities, logged command
#     ids, sagas, a registered command, a tenant restriction and a command
#     sent at commit, through the release's names (dc_send_command, ...);
#     the new library is installed and the server restarted; its nodes
#     refuse to serve the old SQL objects, saying why, and callers are told
#     at once; ALTER EXTENSION durable_cluster UPDATE; then every row
#     survived, retries of logged commands get their first replies, through
#     the old names and the new (dc.send_command), and the cluster serves the
#     old callers.
#
#     The server runs from a private copy of the PostgreSQL installation
#     (DurableClusterLoad::install_release), so that the libraries can be
#     swapped without touching the system's.  Release 0.1 built for
#     PostgreSQL 15 only, so on 17 and 18 only the upgrade from 0.2 runs,
#     and the test says so.  028_rolling_upgrade.pl upgrades a cluster of
#     two servers.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;
use Time::HiRes qw(time usleep);

# Wait until the server log, from offset on, matches re n times.
sub wait_for_log_count
{
	my ($node, $re, $n, $offset) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		my @matches = slurp_file($node->logfile, $offset) =~ /$re/g;
		return 1 if @matches >= $n;
		usleep(100_000);
	}
	return 0;
}

# Release 0.1 was made for PostgreSQL 15 and does not build on later
# majors: there, no 0.1 installation exists to upgrade.
my ($major) = `pg_config --version` =~ /PostgreSQL (\d+)/;
my @releases = $major == 15 ? ('0.1', '0.2') : ('0.2');
note("release 0.1 supports PostgreSQL 15 only: on $major the upgrade from 0.1 does not run")
  if $major != 15;

sub upgrade_from
{
	my ($from) = @_;
	(my $name = "upgrade_from_$from") =~ tr/./_/;
	my $install = DurableClusterLoad::install_release($from);
	my $node = PostgreSQL::Test::Cluster->new($name, install_path => $install->{path});
	$node->init;
	$node->append_conf('postgresql.conf', q{
	shared_preload_libraries = 'durable_cluster'
	max_worker_processes = 32
	durable_cluster.heartbeat_interval = '200ms'
	durable_cluster.failure_timeout = '2s'
	});
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
	is($node->safe_psql('postgres',
			q{SELECT extversion FROM pg_extension WHERE extname = 'durable_cluster'}),
		$from, "the extension is installed at version $from");

	my $ready_query = q{
	SELECT (SELECT count(*) FROM dc_members WHERE status = 'up') = 3
	   AND (SELECT count(*) FROM dc_shards s JOIN dc_members m ON m.name = s.node
	         WHERE m.status = 'up') = 100};
	$node->poll_query_until('postgres', $ready_query)
	  or die "the nodes of release $from did not come up";

	# What a cluster in use holds: states with revisions, logged command ids,
	# completed sagas, a registered command, a tenant restriction, a command
	# queued at commit.
	$node->safe_psql('postgres', q{
	CREATE FUNCTION set_nickname(state jsonb, payload jsonb) RETURNS jsonb
	LANGUAGE sql AS $$ SELECT state || jsonb_build_object('nickname', payload -> 'nickname') $$;
	SELECT dc_register_command('set_nickname', 'set_nickname(jsonb, jsonb)');
	CREATE ROLE upgrade_tenant LOGIN;
	GRANT dc_client TO upgrade_tenant;
	SELECT dc_restrict_role('upgrade_tenant', ARRAY['mall_up']);
	SELECT dc_send_command('mall_up', 'u' || g, 'add_balance',
	                       jsonb_build_object('amount', g * 10, 'command_id', 'deposit-' || g))
	  FROM generate_series(1, 20) g;
	SELECT dc_send_command('mall_up', 'u' || g, 'set_nickname',
	                       jsonb_build_object('nickname', 'n' || g, 'command_id', 'nick-' || g))
	  FROM generate_series(1, 5) g;
	SELECT dc_transfer('mall_up', 'u' || g, 'mall_up', 'u' || (g + 10), 1.25)
	  FROM generate_series(1, 5) g;
	});
	$node->poll_query_until('postgres',
		q{SELECT count(*) = 5 AND bool_and(status = 'completed') FROM dc_sagas})
	  or die 'the transfers did not complete';
	$node->safe_psql('postgres', q{
	BEGIN;
	SELECT dc_send_command_at_commit('mall_up', 'u20', 'login', '{"command_id": "at-commit-1"}');
	COMMIT;
	});
	$node->poll_query_until('postgres',
		q{SELECT dc_command_outcome('mall_up', 'u20', 'at-commit-1') ->> 'status' = 'done'})
	  or die 'the command sent at commit was not applied';

	# Every row the upgrade must keep, as text.
	my $snapshot_query = q{
	SELECT string_agg(t, E'\n' ORDER BY t) FROM (
	  SELECT 'state ' || mall_id || ' ' || user_id || ' ' || revision || ' ' || state::text AS t
	    FROM durable_cluster.entity_state
	  UNION ALL
	  SELECT 'log ' || row_to_json(l)::text FROM durable_cluster.command_log l
	  UNION ALL
	  SELECT 'saga ' || row_to_json(s)::text FROM durable_cluster.sagas s
	  UNION ALL
	  SELECT 'command ' || row_to_json(c)::text FROM durable_cluster.commands c
	  UNION ALL
	  SELECT 'grant ' || row_to_json(g)::text FROM durable_cluster.tenant_grants g
	  UNION ALL
	  -- (0.3 adds the roles a command acts as, NULL in a row of before)
	  SELECT 'pending ' || (row_to_json(p)::jsonb - 'roles')::text FROM durable_cluster.pending_commands p
	  UNION ALL
	  SELECT 'settings ' || number_of_shards FROM durable_cluster.settings) rows};
	my $before = $node->safe_psql('postgres', $snapshot_query);
	my %count_before = map { $_ => scalar(() = $before =~ /^$_ /mg) }
	  qw(state log saga command grant pending);
	cmp_ok($count_before{state}, '>=', 20, "release $from stored the entities");
	cmp_ok($count_before{log}, '>=', 26, 'and logged the command ids');
	is($count_before{saga}, 5, 'and kept the sagas');
	is($count_before{command}, 1, 'and registered the command');
	is($count_before{grant}, 1, 'and the tenant restriction');
	my $deposit_reply = $node->safe_psql('postgres',
		q{SELECT dc_send_command('mall_up', 'u3', 'add_balance', '{"amount": 30, "command_id": "deposit-3"}')});

	# ---------------------------------------------------------------------------
	# The new library installed (as a package would), the server restarted.
	# ---------------------------------------------------------------------------
	$node->stop;
	my $to = DurableClusterLoad::install_tree($install);
	isnt($to, $from, "the tree's version ($to) is not $from");

	my $log_offset = -s $node->logfile;
	$node->start;
	# (a node writing its store in process may start once without a
	# database, and restart as soon as it finds dc_cluster can log in: the
	# processes that refuse, and are to serve again, are the connected ones)
	$node->poll_query_until('postgres', q{
	SELECT count(*) = 3 FROM pg_stat_activity
	 WHERE backend_type = 'durable_cluster node' AND datname IS NOT NULL})
	  or die 'the nodes did not connect to the database';
	my @node_pids = split /\n/, $node->safe_psql('postgres', q{
	SELECT pid FROM pg_stat_activity WHERE backend_type = 'durable_cluster node' ORDER BY pid});
	ok( (3 == grep {
				my $pid = $_;
				wait_for_log_count($node,
					qr/\[$pid\] WARNING:  durable_cluster node-\d does not serve: the extension in the store is version \Q$from\E, but this server loaded the library of version \Q$to\E/,
					1, $log_offset);
			} @node_pids),
		'the nodes refuse to serve the old SQL objects, and say why');
	like(slurp_file($node->logfile, $log_offset), qr/HINT:  .*ALTER EXTENSION durable_cluster UPDATE/,
		'with a hint naming ALTER EXTENSION ... UPDATE');

	my $start = time();
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		q{SELECT dc_send_command('mall_up', 'u1', 'add_balance', '{"amount": 1}')},
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($stderr,
		qr/ERROR:  55000: durable_cluster does not serve on this server: the extension in the store is version \Q$from\E, but this server loaded the library of version \Q$to\E/,
		'a command meanwhile fails with 55000 and the reason');
	cmp_ok(time() - $start, '<', 5, 'at once, not after ask_timeout');
	is($node->safe_psql('postgres', $snapshot_query), $before, 'and changed nothing');

	# ---------------------------------------------------------------------------
	# ALTER EXTENSION ... UPDATE: the nodes serve again.
	# ---------------------------------------------------------------------------
	$node->safe_psql('postgres', 'ALTER EXTENSION durable_cluster UPDATE');
	is($node->safe_psql('postgres', q{SELECT library || ' ' || extension FROM dc.version()}),
		"$to $to", "dc.version(): library and extension at $to");
	ok( (3 == grep {
				my $pid = $_;
				wait_for_log_count($node, qr/\[$pid\] LOG:  durable_cluster node-\d serves again/, 1,
					$log_offset);
			} @node_pids),
		'the three nodes say they serve again');
	# (the members' rows of before the restart look up until the nodes rejoin)
	$node->poll_query_until('postgres', $ready_query . q{
	   AND (SELECT count(*) FROM dc_members m JOIN pg_stat_activity a ON a.pid = m.pid
	         WHERE m.status = 'up' AND a.backend_type = 'durable_cluster node') = 3})
	  or die 'the nodes did not serve after the update';

	is($node->safe_psql('postgres', $snapshot_query), $before,
		'every state, revision, command log entry, saga, registration and grant survived');
	is($node->safe_psql('postgres',
			q{SELECT dc_send_command('mall_up', 'u3', 'add_balance', '{"amount": 30, "command_id": "deposit-3"}')}),
		$deposit_reply, "a retry of a command logged by $from gets its first reply");
	is($node->safe_psql('postgres',
			q{SELECT dc.send_command('mall_up', 'u3', 'add_balance', '{"amount": 30, "command_id": "deposit-3"}')}),
		$deposit_reply, 'and so does one through the API\'s schema, dc');
	is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM dc_members) = (SELECT count(*) FROM dc.members)
	   AND dc_shard_id('mall_up', 'u3') = dc.shard_id('mall_up', 'u3')
	   AND dc_get_state('mall_up', 'u3') = dc.get_state('mall_up', 'u3')}),
		't', "$from\'s short names answer as their dc twins");

	# The cluster serves: revisions go on, the registered command, transfers
	# and the tenant restriction work.
	my ($rev, $balance) = split /\|/, $node->safe_psql('postgres',
		q{SELECT revision, state ->> 'balance' FROM durable_cluster.entity_state
	       WHERE mall_id = 'mall_up' AND user_id = 'u4'});
	is($node->safe_psql('postgres',
			q{SELECT r ->> 'revision' FROM dc_send_command('mall_up', 'u4', 'add_balance', '{"amount": 1}') r}),
		$rev + 1, 'a new command continues from the stored revision');
	is($node->safe_psql('postgres',
			q{SELECT dc_send_command('mall_up', 'u4', 'set_nickname', '{"nickname": "after"}') #>> '{state,nickname}'}),
		'after', 'the registered command is served');
	$node->safe_psql('postgres',
		q{SELECT dc_transfer('mall_up', 'u4', 'mall_up', 'u14', 2.00)});
	$node->poll_query_until('postgres',
		q{SELECT count(*) = 6 AND bool_and(status = 'completed') FROM dc_sagas})
	  or die 'a transfer after the update did not complete';
	is($node->safe_psql('postgres', q{SELECT dc_get_state('mall_up', 'u4') #>> '{state,balance}'}),
		sprintf('%.2f', $balance + 1 - 2), 'a transfer after the update moved the money');
	($ret, $stdout, $stderr) = $node->psql('postgres',
		q{SELECT dc_send_command('other_mall', 'u1', 'login')},
		extra_params => [ '-U', 'upgrade_tenant', '-v', 'VERBOSITY=verbose' ]);
	like($stderr, qr/ERROR:  42501/, 'the tenant restriction still holds');

	$node->stop;
}

upgrade_from($_) for @releases;
done_testing();
