#
# test/t/015_drop_under_load.pl
#     DROP EXTENSION while writers send commands: a command caught in the
#     middle fails with 55000 ("durable_cluster was dropped ..., it was not
#     applied"), or, once the API is gone, 3F000 (its schema, dc, does not
#     exist) or 42883 (a call planned before) -- never with an internal
#     error (XX000).  CREATE EXTENSION afterwards serves again.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('drop_load', 3, qq{
durable_cluster.heartbeat_interval = '200ms'
});

my $load = DurableClusterLoad->start($node, name => 'drop', clients => 4, entities => 20);
ok($load->wait_for_progress(200), 'writers are under way');
my $dropped_at = $node->safe_psql('postgres',
	'DROP EXTENSION durable_cluster; SELECT clock_timestamp()');
my $pattern = $load->appname_pattern;
ok(DurableClusterLoad::poll_until($node, qq{
SELECT count(*) = 4 FROM pg_stat_activity
 WHERE application_name LIKE '$pattern' AND query_start > '$dropped_at'}, timeout => 60),
	'every writer sent commands after the drop');
$load->stop;
cmp_ok(scalar($load->failures), '>=', 4, 'commands failed once the extension was gone');
$load->failures_ok('drop under load', allowed => [ '55000', '3F000', '42883' ]);

$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
ok(DurableClusterLoad::poll_until($node, DurableClusterLoad::balanced_query(3), timeout => 60),
	'the nodes serve again after CREATE EXTENSION');
is($node->safe_psql('postgres',
		q{SELECT dc.send_command('drop', 'again', 'login') ->> 'result'}),
	'logged_in', 'a command after CREATE EXTENSION');

$node->stop;
done_testing();
