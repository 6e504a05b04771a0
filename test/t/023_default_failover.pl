#
# test/t/023_default_failover.pl
#     With the default settings (heartbeat_interval 1 s, failure_timeout
#     5 s, ask_timeout 10 s), writers ride through a failover without
#     errors: a node paused past failure_timeout, a node process that ends
#     (pg_terminate_backend; the postmaster starts it again) and a
#     dc.remove_node.  Commands waiting for the lost node's shards wait and
#     go to the new owner; only a command the paused node had already taken
#     may be answered 40003, and its retry with the same command_id is
#     answered.  Any other error, on any attempt, fails the test, and the
#     stored state must be exactly what the writers were told.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

# nothing about timing is configured: the defaults are what is tested
my $node = DurableClusterLoad::new_server('defaults', 3, '');
is($node->safe_psql('postgres', q{
SELECT current_setting('durable_cluster.heartbeat_interval') || ' '
    || current_setting('durable_cluster.failure_timeout') || ' '
    || current_setting('durable_cluster.ask_timeout')}),
	'1s 5s 10s', 'default heartbeat_interval, failure_timeout and ask_timeout');
unlike(slurp_file($node->logfile), qr/ask_timeout .* is not longer than a failover/,
	'the defaults draw no warning');

my $load = DurableClusterLoad->start($node, name => 'defaults', clients => 4, entities => 30,
	retry => 1, pause_ms => 5, budget => 30000);
ok($load->wait_for_progress(100, 60), 'writers are under way');

# a pause past failure_timeout, a node process that ends, dc.remove_node
DurableClusterLoad::lose_three_nodes($node, $load, 100);

$load->stop;
ok($load->clients_ok, 'the writers ended on the stop flag');
my @other = grep { $_ ne '40003' && $load->answered($_) > 0 } keys %{ $load->{answered} };
is("@other", '', 'no attempt got an error but 40003 (a command the paused node had taken)')
  or $load->report_failures('defaults');
note(sprintf('attempts answered 40003: %d', $load->answered('40003')));
$load->failures_ok('default failover', max => 0);
DurableClusterLoad::check_stored($node, 'default failover', [$load]);

$node->stop;
done_testing();
