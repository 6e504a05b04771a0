#
# test/t/025_bulk_failover.pl
#     dc.send_commands under failover.  Writers send their commands 40 at a
#     time (more than the 30 entities, so every call has several commands
#     for some entities) while a node is paused past failure_timeout, a
#     node process ends and a node is removed.  Every command has a
#     definite row: acknowledged commands are all stored, once each, and
#     nothing else is stored but commands answered 40003 ("may or may not
#     have been applied"); no command fails but those the lost nodes had.  Per writer, each entity's acknowledged
#     revisions rise in the writer's order: commands of one call to one
#     entity applied in input order.
#

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use DurableClusterLoad;

my $node = DurableClusterLoad::new_server('bulk', 3, q{
durable_cluster.heartbeat_interval = '200ms'
durable_cluster.failure_timeout = '2s'
durable_cluster.ask_timeout = '10s'
});

my $load = DurableClusterLoad->start($node, name => 'bulk', clients => 3, entities => 30,
	bulk => 40, pause_ms => 40, budget => 60000);
ok($load->wait_for_progress(500, 60), 'bulk writers are under way');

# a pause past failure_timeout, a node process that ends, dc.remove_node
DurableClusterLoad::lose_three_nodes($node, $load, 500);

$load->stop;
ok($load->clients_ok, 'the writers ended on the stop flag');
cmp_ok($load->acked, '>=', 2000, 'thousands of bulk commands acknowledged');
# 40003: the paused or ended node had taken the command.  08006: the
# paused node's read from the store outlasted its timeout while it was
# stopped, before it wrote anything; check_stored below holds it to "not
# applied".
my @other = grep { $_ ne '40003' && $_ ne '08006' && $load->answered($_) > 0 }
  keys %{ $load->{answered} };
is("@other", '', 'no command got an error but 40003 or 08006 from a node that was taken away')
  or $load->report_failures('bulk');
note(sprintf('commands answered 40003: %d, 08006: %d',
	$load->answered('40003'), $load->answered('08006')));
DurableClusterLoad::check_stored($node, 'bulk failover', [$load]);

# commands of one writer to one entity were applied in the writer's order
my %last;
my @out_of_order;
for my $ack (sort { $a->{client} <=> $b->{client} || $a->{seq} <=> $b->{seq} } @{ $load->{acks} })
{
	my $key = "$ack->{client}|$ack->{user}";
	push @out_of_order, "client $ack->{client}, $ack->{user}: seq $ack->{seq} got revision $ack->{revision} after $last{$key}"
	  if defined $last{$key} && $ack->{revision} <= $last{$key};
	$last{$key} = $ack->{revision};
}
is(scalar(@out_of_order), 0, "each writer's commands to an entity applied in its order")
  or diag(join("\n", @out_of_order[ 0 .. ($#out_of_order < 9 ? $#out_of_order : 9) ]));

$node->stop;
done_testing();
