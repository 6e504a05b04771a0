#
# test/t/DurableClusterLoad.pm
#     Shared helpers of the TAP tests: concurrent writers, the check of
#     stored state against what the writers were told, cluster polling,
#     private installations of a release for upgrades, and a LISTEN client.  Not a test itself (prove runs test/t/*.pl only);
#     tests load it with
#
#         use FindBin;
#         use lib $FindBin::RealBin;
#         use DurableClusterLoad;
#
# Writers
# -------
#   my $load = DurableClusterLoad->start($node, name => 'stop', mall => 'm_stop',
#                                        clients => 6, entities => 30);
#   ... do things to the cluster while they run ...
#   $load->stop;                       # raise the stop flag, wait for them
#   ok($load->clients_ok, ...);        # every psql ended on the flag
#   $load->failures_ok('label', allowed => ['55000', '40003']);
#   DurableClusterLoad::check_stored($node, 'label', [$load]);
#
# Each writer is one psql running a generated script, as in
# 001_acknowledged_totals.pl: up to "budget" add_balance commands with
# deterministic amounts in whole cents, round-robin over the entities of one
# mall (each client starting elsewhere, so all clients hit all nodes at
# once).  After every command the script prints one line to its output
# file:
#
#   A|client|seq|ok|revision                 the command was answered
#   F|client|seq| SQLSTATE | message          the command raised an error
#
# (psql's ERROR, SQLSTATE and LAST_ERROR_MESSAGE variables), so every
# command sent has a definite outcome unless the client itself died (crash,
# shutdown): then its first command without an outcome may have been in
# flight, and the commands after it were never sent.  An F line without a
# SQLSTATE is such a command too: psql lost its connection while it ran
# (and exits at its next statement).
#
# With bulk => K (K > 1), the same commands go K at a time in calls of
# dc.send_commands, each with a command_id, and are not retried; the
# output has one line per command all the same.
#
# With short_names => 1, the commands are sent by the short names of
# release 0.1 (dc_send_command): for servers still at 0.1, and to show
# that 0.1's callers keep working.
#
# With retry => 1, every command carries a command_id and a command that
# failed is sent once more (an F line, then the retry's line): the retry's
# outcome is the command's, but for a retry that fails after a first
# attempt answered 40003, which leaves it unknown (counted as a 40003);
# retried() counts them.  After a 40003 the retry carries the same
# command_id; after any other error (which means "not applied") a new one,
# so that a first attempt applied despite its answer shows in the check.
#
# Every "stop_every" commands (default 1) a writer reads its row of the
# table dcload_control, sleeping "pause_ms" (default 1) in the same
# statement -- which leaves some CPU to the rest of a small machine and
# makes the default budget of 20,000 commands per client last well over
# half a minute -- and quits once the row says stop.  So a writer runs until it is told to stop or until its budget is
# spent; clients_ok() tells which, and a test should make sure the budget
# was not what ended the load.
#
# The check
# ---------
#   check_stored($node, $label, \@loads, in_flight => 0|1)
#
# For every entity of the loads' malls (loads may share a mall; their
# acknowledgements are merged), with A acknowledged commands:
#
#   exact:            for an entity with no command of unknown outcome, the
#                     acknowledged revisions are exactly 1..A, the stored
#                     revision is A and the stored balance is the sum of the
#                     acknowledged amounts; nothing is stored for an entity
#                     that had no acknowledged command.
#   unknown outcome:  commands answered 40003 ("may or may not have been
#                     applied": the caller stopped waiting, e.g. for a paused
#                     node) and, with in_flight => 1 (after a crash or a
#                     shutdown that killed the clients), the commands in
#                     flight at the end.  For an entity with such commands,
#                     acknowledged revisions are distinct and at most the
#                     stored revision R; the R - A revisions nobody was told
#                     about are accounted for by R - A of those commands,
#                     whose amounts add up to exactly the stored balance
#                     minus the acknowledged amounts.
#
# Amounts are handled as integer cents here and as numeric on the server.
#

package DurableClusterLoad;

use strict;
use warnings;

use Carp;
use List::Util qw(max);
use File::Basename ();
use File::Copy ();
use File::Path ();
use FindBin;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our $control_table = 'dcload_control';

# ---------------------------------------------------------------------------
# Writers.
# ---------------------------------------------------------------------------

sub user_of
{
	my ($i) = @_;
	return sprintf('u%03d', $i + 1);
}

# The command seq of client c: [ user, cents ].  Deterministic.
sub command_of
{
	my ($self, $c, $i) = @_;
	my $user = user_of(($i + 7 * $c) % $self->{entities});
	my $cents = 1 + (($c * 7919 + $i * 104729 + $self->{seed} * 31) % 999);
	return ($user, $cents);
}

sub _amount
{
	my ($cents) = @_;
	return sprintf('%d.%02d', int($cents / 100), $cents % 100);
}

sub start
{
	my ($class, $node, %opts) = @_;

	my $self = bless {
		node => $node,
		name => 'load',
		mall => undef,
		clients => 6,
		entities => 30,
		budget => 20000,
		pause_ms => 1,
		stop_every => 1,
		seed => 0,
		retry => 0,
		bulk => 1,
		dbname => 'postgres',
		timeout => 5 * $PostgreSQL::Test::Utils::timeout_default,
		%opts,
	}, $class;
	croak "name must be a plain word" unless $self->{name} =~ /^\w+$/;
	croak "bulk calls are not retried" if $self->{bulk} > 1 && $self->{retry};
	$self->{mall} //= "mall_$self->{name}";
	croak "mall must be a plain word" unless $self->{mall} =~ /^\w+$/;

	$node->safe_psql(
		$self->{dbname}, qq{
CREATE TABLE IF NOT EXISTS $control_table (name text PRIMARY KEY, stop boolean NOT NULL);
INSERT INTO $control_table VALUES ('$self->{name}', false)
    ON CONFLICT (name) DO UPDATE SET stop = false;});

	my $dir = $PostgreSQL::Test::Utils::tmp_check;
	my $psql = $node->installed_command('psql');
	my $check = "SELECT stop AS dcload_stop FROM $control_table"
	  . ($self->{pause_ms} > 0 ? sprintf(', pg_sleep(%.3f)', $self->{pause_ms} / 1000) : '')
	  . " WHERE name = '$self->{name}' \\gset\n"
	  . "\\if :dcload_stop\n\\q\n\\endif\n";

	for my $c (1 .. $self->{clients})
	{
		my $base = "$dir/dcload_$self->{name}_$c";
		my $sql = "\\set dcload_stop false\n";
		$sql .= $self->_bulk_script($c, $check) if $self->{bulk} > 1;
		for my $i (0 .. ($self->{bulk} > 1 ? -1 : $self->{budget} - 1))
		{
			my ($user, $cents) = $self->command_of($c, $i);
			my $amount = _amount($cents);
			my $send = sub {
				my ($id) = @_;
				my $payload = defined $id
				  ? "{\"amount\": $amount, \"command_id\": \"$id\"}"
				  : "{\"amount\": $amount}";
				return "SELECT 'A|$c|$i|' || coalesce(r->>'ok', 'null') || '|' || coalesce(r->>'revision', '')"
				  . " FROM (SELECT " . ($self->{short_names} ? 'dc_send_command' : 'dc.send_command')
				  . "('$self->{mall}', '$user', 'add_balance',"
				  . " '$payload') AS r) s;\n";
			};
			my $failed = "\\echo F|$c|$i| :SQLSTATE | :LAST_ERROR_MESSAGE\n";
			my $id = "$self->{name}-$c-$i";
			# With retry, a failed command is sent once more.  After a 40003
			# (outcome unknown) with the same command_id: applied at most
			# once, whatever the first outcome.  After any other error, which
			# docs/sql-api.md calls "not applied", as a new command (a new
			# command_id): had the first attempt been applied after all, the
			# check of stored state would find one application too many.
			my $retry = $send->($id)
			  . "\\if :ERROR\n" . $failed . "\\endif\n";
			my $fresh_retry = $send->("$id-r")
			  . "\\if :ERROR\n" . $failed . "\\endif\n";
			$sql .= $send->($self->{retry} ? $id : undef) . "\\if :ERROR\n" . $failed
			  . ($self->{retry}
				  ? "SELECT :'SQLSTATE' = '40003' AS dcload_unknown \\gset\n"
				  # (that fails too when the connection is gone: no retry then)
				  . "\\if :ERROR\n\\elif :dcload_unknown\n" . $retry . "\\else\n" . $fresh_retry
				  . "\\endif\n"
				  : '')
			  . "\\endif\n";
			$sql .= $check if ($i + 1) % $self->{stop_every} == 0;
		}
		unlink "$base.sql", "$base.out", "$base.err";
		PostgreSQL::Test::Utils::append_to_file("$base.sql", $sql);

		push @{ $self->{clients_list} },
		  {
			client => $c,
			script => "$base.sql",
			out => "$base.out",
			err => "$base.err",
			# Output goes straight to files: nothing has to pump pipes
			# while the test does other things.
			harness => IPC::Run::start(
				[
					$psql, '-XAtq',
					'-v', 'ON_ERROR_STOP=0',
					'-d', $node->connstr($self->{dbname})
					  . " application_name=dcload_$self->{name}_$c",
					'-f', "$base.sql"
				],
				'<', \undef, '>', "$base.out", '2>', "$base.err",
				IPC::Run::timeout($self->{timeout}))
		  };
	}
	$self->{started} = time;
	note("load '$self->{name}': $self->{clients} clients started on mall $self->{mall}");
	return $self;
}

# The script of client $c with bulk => K: the same commands, K per call of
# dc.send_commands, each with a command_id; one output line per command
# from its row, or, when the call fails as a whole, an F line for each of
# its commands.
sub _bulk_script
{
	my ($self, $c, $check) = @_;
	my $sql = '';
	for (my $i0 = 0; $i0 < $self->{budget}; $i0 += $self->{bulk})
	{
		my $i1 = $i0 + $self->{bulk} - 1;
		$i1 = $self->{budget} - 1 if $i1 >= $self->{budget};
		my @commands = map {
			my ($user, $cents) = $self->command_of($c, $_);
			sprintf('{"mall_id": "%s", "user_id": "%s", "command": "add_balance", '
				  . '"payload": {"amount": %s, "command_id": "%s-%d-%d"}}',
				$self->{mall}, $user, _amount($cents), $self->{name}, $c, $_)
		} $i0 .. $i1;
		$sql .= "SELECT CASE WHEN b.sqlstate IS NULL"
		  . " THEN 'A|$c|' || ($i0 + b.n - 1) || '|' || coalesce(b.reply->>'ok', 'null')"
		  . " || '|' || coalesce(b.reply->>'revision', '')"
		  . " ELSE 'F|$c|' || ($i0 + b.n - 1) || '| ' || b.sqlstate || ' | '"
		  . " || replace(b.message, E'\\n', ' ') END"
		  . " FROM dc.send_commands('[" . join(', ', @commands) . "]') b ORDER BY b.n;\n"
		  . "\\if :ERROR\n"
		  . join('', map { "\\echo F|$c|$_| :SQLSTATE | :LAST_ERROR_MESSAGE\n" } $i0 .. $i1)
		  . "\\endif\n"
		  . $check;
	}
	return $sql;
}

# application_name of the writers' sessions, as a LIKE pattern.
sub appname_pattern
{
	my ($self) = @_;
	return "dcload\\_$self->{name}\\_%";
}

# Commands of the load's mall stored so far (sum of revisions), read from
# the table (on the server given as store => ..., by default the writers').
sub stored_commands
{
	my ($self) = @_;
	my ($ret, $out, $err) = ($self->{store} // $self->{node})->psql(
		$self->{dbname}, qq{
SELECT coalesce(sum(revision), 0) FROM durable_cluster.entity_state
 WHERE mall_id = '$self->{mall}'});
	return $ret == 0 && $out =~ /^\d+$/ ? $out : undef;
}

# Wait until at least $n more commands of the load are stored than when
# called: the writers are making progress.  Returns true if they did within
# $timeout seconds.
sub wait_for_progress
{
	my ($self, $n, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $deadline = time + $timeout;
	my $base;
	while (time < $deadline)
	{
		my $now = $self->stored_commands;
		if (defined $now)
		{
			$base //= $now;
			return 1 if $now - $base >= $n;
		}
		usleep(50_000);
	}
	diag("load '$self->{name}': fewer than $n commands stored within $timeout s");
	return 0;
}

# Raise the stop flag and wait for every writer to end.
sub stop
{
	my ($self) = @_;
	$self->{node}->safe_psql($self->{dbname},
		"UPDATE $control_table SET stop = true WHERE name = '$self->{name}'");
	$self->{stopped_by_flag} = 1;
	return $self->wait;
}

# Wait for every writer to end (stop flag, budget, or a lost connection).
sub wait
{
	my ($self) = @_;
	return if $self->{finished};
	for my $client (@{ $self->{clients_list} })
	{
		my $done = eval { $client->{harness}->finish; 1 };
		if (!$done)
		{
			diag("load '$self->{name}' client $client->{client}: $@");
			$client->{harness}->kill_kill;
			$client->{exit} = -1;
		}
		else
		{
			$client->{exit} = $client->{harness}->result;
		}
	}
	$self->{finished} = 1;
	$self->{elapsed} = time - $self->{started};
	# The scripts are large and can be made again; the output stays.
	unlink map { $_->{script} } @{ $self->{clients_list} };
	$self->_collect;
	return;
}

sub _collect
{
	my ($self) = @_;
	$self->{acked} = 0;
	$self->{retried} = 0;
	$self->{unknown_before_retry} = {};
	$self->{failures} = [];
	$self->{in_flight} = [];
	$self->{bad_lines} = [];
	$self->{exhausted} = [];
	$self->{answered} = {};

	for my $client (@{ $self->{clients_list} })
	{
		my $c = $client->{client};
		my %outcome;
		my $out = -e $client->{out} ? slurp_file($client->{out}) : '';
		for my $line (split /\n/, $out)
		{
			next if $line eq '';
			my ($kind, $lc, $i, $rest);
			if ($line =~ /^A\|(\d+)\|(\d+)\|(.*)$/)
			{
				($lc, $i, $rest) = ($1, $2, $3);
				my ($ok, $revision) = split /\|/, $rest, -1;
				$self->_supersede(\%outcome, $c, $i);
				if ($lc != $c || exists $outcome{$i})
				{
					push @{ $self->{bad_lines} }, "client $c: $line";
					next;
				}
				my ($user, $cents) = $self->command_of($c, $i);
				if ($ok eq 'true' && defined $revision && $revision =~ /^\d+$/)
				{
					$outcome{$i} = 'A';
					$self->{acked}++;
					push @{ $self->{acks} },
					  { client => $c, seq => $i, user => $user, cents => $cents,
						revision => $revision };
				}
				else
				{
					$outcome{$i} = 'F';
					push @{ $self->{failures} },
					  { client => $c, seq => $i, user => $user, cents => $cents,
						sqlstate => 'REFUSED', message => "reply ok=$ok revision=" . ($revision // '') };
				}
			}
			elsif ($line =~ /^F\|(\d+)\|(\d+)\|\s*(\S*)\s*\|\s?(.*)$/)
			{
				($lc, $i) = ($1, $2);
				my ($sqlstate, $message) = ($3, $4);
				if ($lc != $c)
				{
					push @{ $self->{bad_lines} }, "client $c: $line";
					next;
				}
				# No SQLSTATE: psql lost its connection (its server was
				# stopped) while the command ran, and the script goes on to
				# its next statement, where psql exits.  Nobody knows the
				# command's outcome: it was in flight.
				if ($sqlstate eq '')
				{
					$self->_supersede(\%outcome, $c, $i);
					my ($user, $cents) = $self->command_of($c, $i);
					$outcome{$i} = 'in flight';
					push @{ $self->{in_flight} },
					  { client => $c, seq => $i, user => $user, cents => $cents };
					next;
				}
				$self->{answered}{$sqlstate}++;
				# An error line follows the A line of no command, but be
				# strict: two outcomes for one command is a bug here (but
				# for the outcome of a retry after a failure).
				$self->_supersede(\%outcome, $c, $i);
				if (exists $outcome{$i})
				{
					push @{ $self->{bad_lines} }, "client $c: second outcome: $line";
					next;
				}
				my ($user, $cents) = $self->command_of($c, $i);
				$outcome{$i} = 'F';
				# a retry that failed after a first attempt of unknown
				# outcome leaves the command's outcome unknown
				($sqlstate, $message) = ('40003', "retry failed with $sqlstate ($message) after a 40003")
				  if $self->{unknown_before_retry}{"$c|$i"} && $sqlstate ne '40003';
				push @{ $self->{failures} },
				  { client => $c, seq => $i, user => $user, cents => $cents,
					sqlstate => $sqlstate, message => $message };
			}
			else
			{
				push @{ $self->{bad_lines} }, "client $c: $line";
			}
		}

		# Commands run one after the other: the outcomes must be 0..k-1.
		my $n = scalar(keys %outcome);
		my @missing = grep { !exists $outcome{$_} } 0 .. $n - 1;
		push @{ $self->{bad_lines} },
		  "client $c: no outcome for commands @missing[0 .. ($#missing < 9 ? $#missing : 9)] although later ones have one"
		  if @missing;
		$client->{sent} = $n;

		push @{ $self->{exhausted} }, $c if $n >= $self->{budget};
		# A client that did not end cleanly may have had its next command in
		# flight (with bulk calls, every command of its call) -- unless its
		# last line already said that its connection went while a command
		# was in flight: psql sent nothing after that one.
		if ($client->{exit} != 0 && $n < $self->{budget}
			&& ($n == 0 || $outcome{ $n - 1 } ne 'in flight'))
		{
			for my $i ($n .. $n + $self->{bulk} - 1)
			{
				last if $i >= $self->{budget};
				my ($user, $cents) = $self->command_of($c, $i);
				push @{ $self->{in_flight} },
				  { client => $c, seq => $i, user => $user, cents => $cents };
			}
		}
		$client->{stderr} = -e $client->{err} ? slurp_file($client->{err}) : '';
	}

	$self->{failures} = [ grep { !$_->{superseded} } @{ $self->{failures} } ];
	my $n_failed = scalar @{ $self->{failures} };
	my $sent = 0;
	$sent += $_->{sent} for @{ $self->{clients_list} };
	$self->{sent} = $sent;
	note(sprintf("load '%s': %d commands with an outcome in %.1f s: %d acknowledged, %d failed, %d possibly in flight",
		$self->{name}, $sent, $self->{elapsed}, $self->{acked}, $n_failed,
		scalar @{ $self->{in_flight} }));
	diag("load '$self->{name}': unexpected output:\n"
		  . join("\n", @{ $self->{bad_lines} }[ 0 .. ($#{ $self->{bad_lines} } < 19 ? $#{ $self->{bad_lines} } : 19) ]))
	  if @{ $self->{bad_lines} };
	return;
}

# With retry, a command that failed is sent again: its failure is replaced
# by the outcome of the retry.  (The command id makes an acknowledged retry
# the command's one application; a retry that fails after a first attempt
# answered 40003 leaves the outcome unknown, and is counted as a 40003.)
sub _supersede
{
	my ($self, $outcome, $c, $i) = @_;
	return unless $self->{retry} && ($outcome->{$i} // '') eq 'F';
	for my $f (grep { $_->{client} == $c && $_->{seq} == $i } @{ $self->{failures} })
	{
		$f->{superseded} = 1;
		$self->{unknown_before_retry}{"$c|$i"} = 1 if $f->{sqlstate} eq '40003';
	}
	$self->{retried}++;
	delete $outcome->{$i};
	return;
}

sub retried { return $_[0]->{retried} // 0; }
# How many attempts (first ones and retries) were answered with $sqlstate.
sub answered { return $_[0]->{answered}{ $_[1] } // 0; }
sub acked { return $_[0]->{acked}; }
sub failures { return @{ $_[0]->{failures} }; }
sub in_flight { return @{ $_[0]->{in_flight} }; }

# True if every writer ended because it was told to stop (exit 0, budget not
# spent) and all output made sense.  Explains itself otherwise.
sub clients_ok
{
	my ($self) = @_;
	my @bad;
	for my $client (@{ $self->{clients_list} })
	{
		next if $client->{exit} == 0;
		my @err = split /\n/, $client->{stderr};
		push @bad, "client $client->{client} exited with $client->{exit}; the end of its stderr:\n"
		  . join("\n", @err[ ($#err > 9 ? $#err - 9 : 0) .. $#err ]);
	}
	push @bad, "clients @{ $self->{exhausted} } spent their whole budget of $self->{budget} before being stopped"
	  if @{ $self->{exhausted} };
	push @bad, scalar(@{ $self->{bad_lines} }) . ' unexpected output lines'
	  if @{ $self->{bad_lines} };
	diag("load '$self->{name}': " . join("\n", @bad)) if @bad;
	return !@bad;
}

# Print the failed commands: a count per SQLSTATE and message shape, and the
# first few in full.
sub report_failures
{
	my ($self, $label) = @_;
	my @f = $self->failures;
	if (!@f)
	{
		note("$label: no failed command");
		return;
	}
	my %by;
	for my $f (@f)
	{
		(my $shape = $f->{message}) =~ s/\d+/N/g;
		$by{"$f->{sqlstate}: $shape"}++;
	}
	diag("$label: " . scalar(@f) . " failed command(s):\n"
		  . join("\n", map { sprintf('  %5d x %s', $by{$_}, $_) } sort keys %by)
		  . "\n  the first of them:\n"
		  . join("\n",
			map { "  client $_->{client} command $_->{seq} ($_->{user}, $_->{cents} cents): $_->{sqlstate} $_->{message}" }
			  @f[ 0 .. ($#f < 9 ? $#f : 9) ]));
	return;
}

# Assert that the failed commands are within what the test tolerates: every
# SQLSTATE in "allowed" (strings, or qr// patterns), and at most "max" of
# them (if given).  Either way they are printed.
sub failures_ok
{
	my ($self, $label, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @f = $self->failures;
	$self->report_failures($label);
	my $all_ok = 1;
	if (defined $opts{max})
	{
		$all_ok &= cmp_ok(scalar(@f), '<=', $opts{max},
			"$label: at most $opts{max} failed commands (got " . scalar(@f) . ')');
	}
	if ($opts{allowed})
	{
		# SQLSTATEs, or patterns (qr//) for whole classes
		my @allowed = @{ $opts{allowed} };
		my $is_allowed = sub {
			my ($state) = @_;
			return grep { ref $_ ? $state =~ $_ : $state eq $_ } @allowed;
		};
		my @other = grep { !$is_allowed->($_->{sqlstate}) } @f;
		$all_ok &= is(scalar(@other), 0,
			"$label: every failed command has SQLSTATE "
			  . join(' or ', map { ref $_ ? "$_" : $_ } @allowed))
		  || diag(join("\n",
			map { "  client $_->{client} command $_->{seq}: $_->{sqlstate} $_->{message}" }
			  @other[ 0 .. ($#other < 19 ? $#other : 19) ]));
	}
	return $all_ok;
}

# ---------------------------------------------------------------------------
# The check of stored state against acknowledgements.
# ---------------------------------------------------------------------------

# Is there a subset of exactly $k of @$amounts that adds up to $sum?
sub _subset_sum
{
	my ($amounts, $k, $sum) = @_;
	return $sum == 0 if $k == 0;
	return 0 if $k > @$amounts;
	my ($first, @rest) = @$amounts;
	return _subset_sum(\@rest, $k - 1, $sum - $first)
	  || _subset_sum(\@rest, $k, $sum);
}

sub check_stored
{
	my ($node, $label, $loads, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $in_flight = $opts{in_flight} // 0;
	my $dbname = $opts{dbname} // 'postgres';

	my (%acked, %flight, %malls);
	my $n_acked = 0;
	for my $load (@$loads)
	{
		croak "load '$load->{name}' has not ended" unless $load->{finished};
		$malls{ $load->{mall} } = 1;
		for my $ack (@{ $load->{acks} || [] })
		{
			my $e = $acked{"$load->{mall}|$ack->{user}"} //=
			  { count => 0, cents => 0, revisions => [] };
			$e->{count}++;
			$e->{cents} += $ack->{cents};
			push @{ $e->{revisions} }, $ack->{revision};
			$n_acked++;
		}
		# Commands whose outcome nobody knows: in flight at a crash, or
		# answered 40003 ("may or may not have been applied").  Only these
		# may be stored without an acknowledgement.
		for my $f (($in_flight ? $load->in_flight : ()),
			grep { $_->{sqlstate} eq '40003' } $load->failures)
		{
			push @{ $flight{"$load->{mall}|$f->{user}"} }, $f->{cents};
		}
	}

	my $mall_list = join(', ', map { "'$_'" } sort keys %malls);
	my $rows = $node->safe_psql(
		$dbname, qq{
SELECT mall_id, user_id, revision, ((state->>'balance')::numeric * 100)::bigint,
       (state->>'balance')::numeric * 100 = round((state->>'balance')::numeric * 100)
  FROM durable_cluster.entity_state
 WHERE mall_id IN ($mall_list)
 ORDER BY 1, 2});
	my %stored;
	for my $row (split /\n/, $rows)
	{
		my ($mall, $user, $revision, $cents, $whole) = split /\|/, $row, -1;
		$stored{"$mall|$user"} = { revision => $revision, cents => $cents, whole => $whole };
	}

	my @bad_revisions;
	my @bad_state;
	my ($sum_stored, $sum_acked, $extra) = (0, 0, 0);
	my %keys = (%acked, %stored);
	for my $key (sort keys %keys)
	{
		my $ak = $acked{$key} // { count => 0, cents => 0, revisions => [] };
		my $st = $stored{$key} // { revision => 0, cents => 0, whole => 't' };
		my $f = $flight{$key} // [];
		$sum_stored += $st->{revision};
		$sum_acked += $ak->{count};

		push @bad_state, "$key: stored balance has fractions of a cent"
		  if $st->{whole} ne 't';

		my @revs = sort { $a <=> $b } @{ $ak->{revisions} };
		my %seen;
		my @dups = grep { $seen{$_}++ == 1 } @revs;
		push @bad_revisions, "$key: revisions acknowledged more than once: @dups"
		  if @dups;

		if (!@$f)
		{
			my @want = (1 .. $ak->{count});
			push @bad_revisions,
			  "$key: $ak->{count} acknowledged revisions are not 1..$ak->{count}: "
			  . (@revs ? "from $revs[0] to $revs[-1]" : 'none')
			  if !@dups && "@revs" ne "@want";
			push @bad_state,
			  "$key: stored revision $st->{revision}, acknowledged commands $ak->{count}"
			  if $st->{revision} != $ak->{count};
			push @bad_state,
			  sprintf('%s: stored balance %.2f, acknowledged amounts add up to %.2f',
				$key, $st->{cents} / 100, $ak->{cents} / 100)
			  if $st->{cents} != $ak->{cents};
			next;
		}

		# What nobody was told about must be explained by the commands of
		# unknown outcome.
		push @bad_revisions,
		  "$key: revision $revs[-1] acknowledged, but only $st->{revision} stored"
		  if @revs && $revs[-1] > $st->{revision};
		my $k = $st->{revision} - $ak->{count};
		my $d = $st->{cents} - $ak->{cents};
		if ($k < 0)
		{
			push @bad_state,
			  "$key: stored revision $st->{revision}, fewer than the $ak->{count} acknowledged commands";
		}
		elsif ($k > @$f)
		{
			push @bad_state,
			  "$key: stored revision $st->{revision}, acknowledged $ak->{count}, but only "
			  . scalar(@$f) . ' command(s) were in flight';
		}
		elsif (!_subset_sum($f, $k, $d))
		{
			push @bad_state,
			  sprintf('%s: stored balance %.2f is acknowledged %.2f plus %d cents, which is no %d of the in-flight amounts (%s)',
				$key, $st->{cents} / 100, $ak->{cents} / 100, $d, $k, join(', ', @$f));
		}
		$extra += $k if $k > 0;
	}

	my $what = $in_flight
	  ? 'acknowledged revisions are distinct and stored'
	  : 'acknowledged revisions of each entity are exactly 1..N';
	my $ok1 = is(scalar(@bad_revisions), 0, "$label: $what")
	  || diag(join("\n", @bad_revisions[ 0 .. ($#bad_revisions < 29 ? $#bad_revisions : 29) ]));
	$what = $in_flight
	  ? 'every acknowledged command is stored once; the rest is what was in flight'
	  : 'stored revision and balance of every entity equal its acknowledged commands';
	my $ok2 = is(scalar(@bad_state), 0, "$label: $what")
	  || diag(join("\n", @bad_state[ 0 .. ($#bad_state < 29 ? $#bad_state : 29) ]));
	note("$label: $n_acked acknowledged, $sum_stored stored over "
		  . scalar(keys %keys) . " entities"
		  . ($in_flight ? ", $extra stored without an acknowledgement (in flight)" : ''));
	return $ok1 && $ok2;
}

# ---------------------------------------------------------------------------
# Polling.
# ---------------------------------------------------------------------------

# Run $query until it prints $expected (default 't'), every $interval
# seconds, for at most $timeout seconds.  Errors (the server restarting)
# just mean "not yet".  Returns (ok, seconds waited, last output); in
# scalar context, ok.
sub poll_until
{
	my ($node, $query, %opts) = @_;
	my $expected = $opts{expected} // 't';
	my $timeout = $opts{timeout} // 60;
	my $interval = $opts{interval} // 0.05;
	my $dbname = $opts{dbname} // 'postgres';
	my $start = $opts{since} // time;
	my $deadline = time + $timeout;
	my ($out, $err) = ('', '');
	while (1)
	{
		# each try is bounded too: a query stuck behind a stalled server
		# ends the wait at its deadline, not never
		my ($ret, $timed_out);
		($ret, $out, $err) = $node->psql($dbname, $query,
			timeout => max(5, $deadline - time),
			timed_out => \$timed_out);
		$out //= '';
		$err = "(the query timed out)\n" . ($err // '') if $timed_out;
		if (defined $ret && $ret == 0 && $out eq $expected)
		{
			return wantarray ? (1, time - $start, $out) : 1;
		}
		last if time >= $deadline;
		usleep($interval * 1_000_000);
	}
	diag("timed out after $timeout s waiting for\n$query\nexpected: $expected\n"
		  . "last output: $out\nlast stderr: " . ($err // ''))
	  unless $opts{quiet};
	# in scalar context (ok(poll_until(...)), poll_until(...) or die) the
	# verdict alone: a list there would give its last element, the output
	return wantarray ? (0, time - $start, $out) : 0;
}

# Start psql on $node running the script $sql in the background; returns
# { h => the IPC::Run harness, out => its output, err => its stderr }, to
# be finished with $run->{h}->finish.
sub psql_script
{
	my ($node, $sql) = @_;
	my %run = (out => '', err => '', sql => $sql);
	$run{h} = IPC::Run::start(
		[ $node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
		  '-d', $node->connstr('postgres') ],
		'<', \$run{sql}, '>', \$run{out}, '2>', \$run{err},
		IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
	return \%run;
}

# Let $seconds pass on $node's clock (so that waits do not depend on
# ours); true once they have.
sub run_for
{
	my ($node, $seconds) = @_;
	my $since = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
	return scalar poll_until($node, qq{
SELECT clock_timestamp() > '$since'::timestamptz + interval '$seconds seconds'},
		timeout => 3 * $seconds);
}

# SQL that is true when $n members are up, all shards are owned by up
# members and shard counts of up members differ by at most one.  It reads
# the tables, which every release has where it has them (the upgrade tests
# ask servers of 0.1 too).
sub balanced_query
{
	my ($n) = @_;
	return qq{
SELECT (SELECT count(*) FROM durable_cluster.members WHERE status = 'up') = $n
   AND (SELECT count(*) FROM durable_cluster.shards s
          JOIN durable_cluster.members m ON m.name = s.node
         WHERE m.status = 'up')
       = (SELECT number_of_shards FROM durable_cluster.settings)
   AND (SELECT max(c) - min(c)
          FROM (SELECT count(s.shard_id) AS c FROM durable_cluster.members m
                  LEFT JOIN durable_cluster.shards s ON s.node = m.name
                 WHERE m.status = 'up' GROUP BY m.name) counts) <= 1};
}

# Print what the cluster looks like.
sub dump_cluster
{
	my ($node, $when) = @_;
	my ($ret, $out, $err) = $node->psql(
		'postgres', q{
SELECT 'member', name, status, incarnation, pid, shard_count, first_shard, last_shard,
       heartbeat_age FROM dc.members;
SELECT 'node process', pid, backend_type, application_name, state, wait_event_type, wait_event,
       left(query, 60)
  FROM pg_stat_activity
 WHERE backend_type LIKE 'durable_cluster%' OR application_name LIKE 'durable\_cluster %'
 ORDER BY 2;
SELECT 'lock wait', pid, backend_type, application_name, wait_event, left(query, 60)
  FROM pg_stat_activity WHERE wait_event_type = 'Lock';
});
	diag("cluster $when (psql exit $ret):\n$out\n" . ($err // ''));
	return;
}

# Wait until $n members are up and balanced and every node answers
# commands (get_state to probe entities of a mall of their own).
sub wait_for_cluster
{
	my ($node, $n, $when, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $timeout = $opts{timeout} // 60;
	my ($ok) = poll_until($node, balanced_query($n), timeout => $timeout);
	ok($ok, "$when: $n members up, every shard owned by one of them, balanced")
	  or dump_cluster($node, $when);
	return 0 unless $ok;
	my $probes = 10 * $n;
	($ok) = poll_until(
		$node, qq{
SELECT count(*) FILTER (WHERE (r->>'ok')::boolean)
       || '|' || count(DISTINCT r->>'node') FILTER (WHERE (r->>'ok')::boolean)
  FROM (SELECT dc.send_command('probe', 'p' || g, 'get_state') AS r
          FROM generate_series(1, $probes) g) s},
		expected => "$probes|$n",
		timeout => $timeout,
		interval => 0.2);
	ok($ok, "$when: all $n nodes answer commands") or dump_cluster($node, $when);
	return $ok;
}

# A started server with the extension created and $nodes nodes up: the
# settings every test here shares, plus $extra_conf.
sub new_server
{
	my ($name, $nodes, $extra_conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
max_worker_processes = 32
durable_cluster.nodes = $nodes
# tens of thousands of commands would bury what matters in the log
log_statement = 'ddl'
$extra_conf
});
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
	wait_for_cluster($node, $nodes, 'after CREATE EXTENSION')
	  or die 'the cluster did not come up';
	return $node;
}

# Take three nodes of a 3-node server away in turn, under the load $load,
# each the way a node goes away: node-1 paused past failure_timeout
# (declared down; then SIGCONT, and it rejoins), node-2's process ended
# with pg_terminate_backend (the postmaster starts it again), node-3
# removed with dc.remove_node.  Asserts that the cluster serves again after
# each, and that the writers stored $progress more commands after each step.
sub lose_three_nodes
{
	my ($node, $load, $progress) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;

	my $paused = member($node, 'node-1');
	pause_node($node, $paused->{pid});
	ok(poll_until($node, q{SELECT status FROM dc.members WHERE name = 'node-1'},
			expected => 'down', timeout => 30, interval => 0.2),
		'the paused node is declared down');
	ok($load->wait_for_progress($progress, 30), 'writers go on while it is paused');
	kill 'CONT', $paused->{pid};
	ok(wait_for_cluster($node, 3, 'after SIGCONT'), 'it rejoins');
	ok($load->wait_for_progress($progress, 30), 'writers go on after it rejoined');

	my $ended = member($node, 'node-2');
	is($node->safe_psql('postgres', "SELECT pg_terminate_backend($ended->{pid})"), 't',
		'node-2 terminated');
	ok(poll_until($node, qq{
SELECT pid <> $ended->{pid} AND status = 'up' FROM dc.members WHERE name = 'node-2'},
			timeout => 30, interval => 0.2),
		'node-2 runs again');
	ok(wait_for_cluster($node, 3, 'after the restart of node-2'), 'balanced again');
	ok($load->wait_for_progress($progress, 30), 'writers go on');

	is($node->safe_psql('postgres', q{SELECT dc.remove_node('node-3')}), '',
		"dc.remove_node('node-3') under load");
	ok(wait_for_cluster($node, 2, 'after dc.remove_node'), 'two nodes serve');
	ok($load->wait_for_progress($progress, 30), 'writers go on');
	return;
}

# A started server of a cluster of several, with 2 nodes, known by its
# host:port, the extension created; its store is $store's (a server made
# by this function, or a connection string) or, when $store is undef, its
# own.  $extra_conf is added to the configuration; it may be a function
# of the new server (PostgreSQL::Test::Cluster, before it starts) that
# returns the text, which can set advertise_address again, for instance.
# With start => sub { ... } the server is started by that function instead
# of $node->start; with install_path => ..., it runs from that installation
# (install_release).
sub new_member_server
{
	my ($name, $store, $extra_conf, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name,
		$opts{install_path} ? (install_path => $opts{install_path}) : ());
	$node->init;
	$extra_conf = $extra_conf->($node) if ref $extra_conf eq 'CODE';
	my $address = $node->host . ':' . $node->port;
	my $store_conf =
	    !defined $store ? ''
	  : ref $store ? "durable_cluster.store = 'host=" . $store->host . ' port=' . $store->port
	  . " dbname=postgres'"
	  : "durable_cluster.store = '$store'";
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'durable_cluster'
max_worker_processes = 32
durable_cluster.nodes = 2
durable_cluster.advertise_address = '$address'
log_statement = 'ddl'
$store_conf
$extra_conf
});
	$opts{start} ? $opts{start}->($node) : $node->start;
	# every server has the SQL API; only the store's tables are used
	$node->safe_psql('postgres', 'CREATE EXTENSION durable_cluster');
	return $node;
}

# A member's row of dc.members, as a hash.
sub member
{
	my ($node, $name) = @_;
	my $row = $node->safe_psql(
		'postgres', qq{
SELECT status, incarnation, pid, shard_count, roles::text FROM dc.members WHERE name = '$name'});
	my %m;
	@m{qw(status incarnation pid shard_count roles)} = split /\|/, $row, -1;
	return \%m;
}

# Does a transaction of a session of its own commit on $node within
# $seconds (1)?  Its commit is flushed, so it waits for every WAL insertion
# begun before it.
sub server_commits
{
	my ($node, $seconds) = @_;
	my $timed_out;
	my ($rc) = $node->psql('postgres', 'SELECT txid_current()',
		timeout => $seconds // 1,
		timed_out => \$timed_out);
	return !$timed_out && defined $rc && $rc == 0;
}

# What the process $pid of $node, just stopped, holds up on the server: ''
# if nothing, else why.  A node writing in process can be stopped inside a
# critical section of PostgreSQL's, as any backend can: inside a WAL
# insertion, holding a WAL insertion lock (then nothing commits on the
# server until it continues, failover included), or holding a buffer's
# content lock (then whoever needs that page waits: another node writing an
# entity on the same page, which then misses its heartbeats too).
# docs/design.md, "A paused node".  Told apart by a transaction of our own
# that cannot commit within a second, or by a process that waits on the
# same LWLock in five samples 0.1 s apart (such waits last microseconds).
sub stopped_process_holds
{
	my ($node, $pid) = @_;
	return 'nothing commits (it is inside a WAL insertion)' unless server_commits($node);
	my %waiting;
	for my $sample (1 .. 5)
	{
		my $timed_out;
		my ($rc, $out) = $node->psql('postgres', qq{
SELECT string_agg(pid || ' (' || backend_type || ', ' || wait_event || ')', ',')
  FROM pg_stat_activity WHERE wait_event_type = 'LWLock' AND pid <> $pid},
			timeout => 5,
			timed_out => \$timed_out);
		return 'nothing answers (a query of pg_stat_activity timed out)' if $timed_out;
		my %now = map { $_ => 1 } split /,/, ($out // '');
		%waiting = $sample == 1 ? %now : map { $_ => 1 } grep { $now{$_} } keys %waiting;
		return '' unless %waiting;
		usleep(100_000);
	}
	return 'others wait on an LWLock it holds: ' . join(', ', sort keys %waiting);
}

# SIGSTOP the node process $pid of $node, at a point where the rest of the
# server goes on.  A test of what the cluster does about a paused node
# needs a pause the cluster can do something about: a stop inside one of
# PostgreSQL's critical sections (stopped_process_holds) is undone
# (SIGCONT, once the server commits again) and tried again a moment later,
# up to 10 times.  Returns the number of stops made (1 unless some had to
# be undone); dies if no stop left the server going on.
sub pause_node
{
	my ($node, $pid) = @_;
	for my $try (0 .. 9)
	{
		kill('STOP', $pid) or croak "cannot SIGSTOP $pid: $!";
		my $holds = stopped_process_holds($node, $pid);
		return $try + 1 if $holds eq '';
		note("pause_node: with $pid stopped, $holds; continuing it and stopping it again");
		kill('CONT', $pid);
		server_commits($node, 30) or croak "the server does not commit even after $pid continued";
		usleep(10_000 + int(rand(90_000)));
	}
	croak "pause_node: each of 10 stops of $pid held up the server";
}

# After a SIGKILL of a backend: wait for the postmaster's crash restart,
# seen in the log after $log_offset, then for connections.
sub wait_for_crash_restart
{
	my ($node, $log_offset, $when) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $reinitialised = 0;
	my $deadline = time + 60;
	while (time < $deadline)
	{
		if (slurp_file($node->logfile, $log_offset) =~
			/all server processes terminated; reinitializing/)
		{
			$reinitialised = 1;
			last;
		}
		usleep(100_000);
	}
	ok($reinitialised, "$when: postmaster went through a crash restart")
	  or diag("server log since the kill:\n" . slurp_file($node->logfile, $log_offset));
	my ($ok) = poll_until($node, 'SELECT 1', expected => '1', timeout => 60, interval => 0.1);
	ok($ok, "$when: server accepts connections again");
	return $reinitialised && $ok;
}

# ---------------------------------------------------------------------------
# Private installations, for upgrades.
#
#   my $install = DurableClusterLoad::install_release('0.1');
#   my $node = PostgreSQL::Test::Cluster->new('old', install_path => $install->{path});
#   ... then, servers running or not:
#   DurableClusterLoad::install_tree($install);
#
# install_release copies this PostgreSQL installation (its binaries copied,
# for PostgreSQL resolves its lib and share directories through its own
# path; everything else linked) and builds release $version of
# durable_cluster, from its sources in tmp_releases/ (test/export_releases.sh
# puts them there), into the copy.  install_tree puts this tree's library
# and extension files, as installed on the system, into the copy the way a
# package manager does, each file renamed into place: a running server
# keeps the library it mapped until it restarts.
# ---------------------------------------------------------------------------

sub _pg_config
{
	my ($what) = @_;
	my $value = `pg_config --$what`;
	chomp $value;
	die "pg_config --$what failed" if $? != 0 || $value eq '';
	return $value;
}

# Link every entry of $from_dir into $to_dir but those whose name matches
# $own (made real directories, recursively, when $recurse says so).
sub _mirror
{
	my ($from_dir, $to_dir, $own, $recurse) = @_;
	File::Path::make_path($to_dir);
	opendir(my $dh, $from_dir) or die "opendir $from_dir: $!";
	for my $entry (grep { $_ ne '.' && $_ ne '..' } readdir $dh)
	{
		next if $entry =~ $own;
		if ($recurse && $recurse->{$entry})
		{
			_mirror("$from_dir/$entry", "$to_dir/$entry", $own);
			next;
		}
		symlink("$from_dir/$entry", "$to_dir/$entry")
		  or die "symlink $to_dir/$entry: $!";
	}
	closedir $dh;
	return;
}

sub install_release
{
	my ($version) = @_;
	my $src = "$FindBin::RealBin/../../tmp_releases/$version";
	-d $src
	  or die "no sources of release $version in $src: test/export_releases.sh puts them there";
	my %dir = map { $_ => _pg_config($_) } qw(bindir pkglibdir sharedir);
	my $root = PostgreSQL::Test::Utils::tempdir('install');

	File::Path::make_path("$root$dir{bindir}");
	opendir(my $bh, $dir{bindir}) or die "opendir $dir{bindir}: $!";
	for my $f (grep { -f "$dir{bindir}/$_" } readdir $bh)
	{
		File::Copy::copy("$dir{bindir}/$f", "$root$dir{bindir}/$f") or die "copy $f: $!";
		chmod 0755, "$root$dir{bindir}/$f";
	}
	closedir $bh;
	_mirror($dir{pkglibdir}, "$root$dir{pkglibdir}", qr/^(durable_cluster|bitcode$)/);
	_mirror($dir{sharedir}, "$root$dir{sharedir}", qr/^durable_cluster/, { extension => 1 });

	my $build = PostgreSQL::Test::Utils::tempdir('build');
	system("cp -r '$src/.' '$build/'") == 0 or die 'copying the release sources failed';
	my ($out, $err) = PostgreSQL::Test::Utils::run_command(
		[ 'make', '-s', '-C', $build, "PG_CONFIG=$dir{bindir}/pg_config",
		  'with_llvm=no', 'install', "DESTDIR=$root" ]);
	ok(-f "$root$dir{pkglibdir}/durable_cluster.so", "release $version built and installed")
	  or diag($err);
	return { root => $root, path => File::Basename::dirname("$root$dir{bindir}"), %dir };
}

sub install_tree
{
	my ($install) = @_;
	my @files = ("$install->{pkglibdir}/durable_cluster.so");
	opendir(my $eh, "$install->{sharedir}/extension") or die "opendir: $!";
	push @files, map { "$install->{sharedir}/extension/$_" } grep { /^durable_cluster/ } readdir $eh;
	closedir $eh;
	for my $f (@files)
	{
		my $to = "$install->{root}$f";
		File::Copy::copy($f, "$to.new") or die "copy $f: $!";
		rename("$to.new", $to) or die "rename $to: $!";
	}
	my ($version) = slurp_file("$install->{sharedir}/extension/durable_cluster.control")
	  =~ /^default_version = '([^']+)'/m;
	return $version;
}

# ---------------------------------------------------------------------------
# A LISTEN durable_cluster client.
# ---------------------------------------------------------------------------
package DurableClusterLoad::Listener;

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(time usleep);

sub new
{
	my ($class, $node, %opts) = @_;
	my $session = $node->background_psql($opts{dbname} // 'postgres', on_error_stop => 0);
	$session->set_query_timer_restart;
	$session->query_safe('LISTEN durable_cluster');
	return bless { session => $session, events => [], json => JSON::PP->new,
		bad => [] }, $class;
}

# Fetch what has arrived (psql prints notifications after each command).
sub poll
{
	my ($self) = @_;
	my $out = eval { $self->{session}->query('SELECT 1') };
	return 0 unless defined $out;
	my $n = 0;
	for my $line (split /\n/, $out)
	{
		next unless $line =~
		  /^Asynchronous notification "durable_cluster" with payload "(.*)" received from server process with PID (\d+)\.$/;
		my ($payload, $pid) = ($1, $2);
		my $event = eval { $self->{json}->decode($payload) };
		if (!$event || ref $event ne 'HASH')
		{
			push @{ $self->{bad} }, $payload;
			next;
		}
		$event->{_pid} = $pid;
		$event->{_seq} = scalar @{ $self->{events} };
		push @{ $self->{events} }, $event;
		$n++;
	}
	return $n;
}

sub events { return @{ $_[0]->{events} }; }
sub bad_payloads { return @{ $_[0]->{bad} }; }

# Wait (polling) until $pred returns true for an event with _seq >= $from;
# returns that event or undef.
sub wait_for
{
	my ($self, $pred, %opts) = @_;
	my $from = $opts{from} // 0;
	my $deadline = time + ($opts{timeout} // 30);
	while (1)
	{
		for my $e (@{ $self->{events} }[ $from .. $#{ $self->{events} } ])
		{
			return $e if $pred->($e);
		}
		last if time >= $deadline;
		$self->poll or usleep(100_000);
	}
	return undef;
}

sub describe
{
	my ($self, $from) = @_;
	$from //= 0;
	my @e = @{ $self->{events} }[ $from .. $#{ $self->{events} } ];
	return join("\n", map {
		my %copy = %$_;
		delete @copy{qw(_pid _seq moves)};
		'  ' . JSON::PP->new->canonical->encode(\%copy)
		  . (exists $_->{moves} ? ' moves: ' . scalar(@{ $_->{moves} || [] }) : '')
	} @e);
}

sub quit
{
	my ($self) = @_;
	eval { $self->{session}->quit; };
	return;
}

1;
