#!/usr/bin/perl
#
# test/tap_run.pl
#     A quiet TAP runner that "make installcheck" uses instead of prove (the
#     Makefile sets PROVE to it), so it takes prove's arguments as PGXS
#     passes them:
#
#         perl test/tap_run.pl [-I DIR]... [--verbose|-v] TEST.pl...
#
#     Why not prove: its formatter prints a file's result only when the
#     file ends and through a block-buffered pipe, so for minutes nothing
#     appears; it lets a passing test's diagnostics (which can read like
#     failures) scroll past; and a failure comes with hundreds of lines of
#     server log before the summary.
#
#     What this prints instead, unbuffered: one line when each file starts
#     and one when it ends, with the time; nothing more for a pass (the
#     test's whole output, STDOUT and STDERR, goes to
#     $TESTDIR/tmp_check/log/tap_<name>.out); for a failure, the reason in
#     a few words, then at most about 25 lines -- the failing tests with
#     their diagnostics and where the full logs are.  At the end a summary
#     whose last two lines are "Files=N, Tests=M, S s" and "Result: PASS"
#     or "Result: FAIL" (test/run_tests.sh looks for both; test/failure_logs.sh
#     finds the failed files by their "FAILED" lines).  With --verbose every
#     line of every test is echoed as it arrives as well.
#
#     A file that runs longer than DC_TAP_FILE_TIMEOUT seconds (default
#     600; the longest file takes about 90 s here) fails as "timed out":
#     first what it was waiting for goes into its output (its processes,
#     and each of its servers' pg_stat_activity), then it is killed and
#     the servers it left are stopped, and the run goes on.  Without this
#     one hung file would use up CI's whole time and leave no trace.
#
#     Exit status 0 only if every file passed (or skipped itself).
#
#     The files run one at a time, in the order given, from the current
#     directory, as "perl TEST.pl" with the -I directories in PERL5LIB,
#     so $0 is the path given (PostgreSQL::Test::Utils names its logs
#     after it), exactly as under prove.  Uses only Perl's core TAP::Parser.
#
use strict;
use warnings;

use File::Basename qw(basename);
use File::Path qw(make_path);
use POSIX qw(strftime);
use TAP::Parser;
use Time::HiRes qw(time);

# at most this many lines about one failed file, besides its result line
use constant MAX_REPORT_LINES => 25;
# at most this many lines for one failed test (its "not ok" and diagnostics)
use constant MAX_TEST_LINES => 8;

# a file running longer than this many seconds is stopped and failed
my $file_timeout = $ENV{DC_TAP_FILE_TIMEOUT} || 600;

my $me = 'tap_run.pl';

# A line as soon as it is printed, even into a pipe (make | tee).
STDOUT->autoflush(1);
STDERR->autoflush(1);

# ---------------------------------------------------------------------------
# Arguments: prove's, as far as they matter here.
# ---------------------------------------------------------------------------

# prove's options that take a value as the next argument: ignoring such an
# option must skip its value too, or the value would be taken for a test
my %takes_value = map { $_ => 1 } qw(
	-e --exec -j --jobs -a --archive -P --plugin -M --harness --formatter
	--source --state --rc --rules --ext --timeout);

my (@libs, @tests);
my $verbose = 0;
while (@ARGV)
{
	my $arg = shift @ARGV;
	if ($arg eq '--')
	{
		push @tests, @ARGV;
		last;
	}
	elsif ($arg eq '-I')
	{
		die "$me: -I needs a directory\n" unless @ARGV;
		push @libs, shift @ARGV;
	}
	elsif ($arg =~ /^-I(.+)$/)
	{
		push @libs, $1;
	}
	elsif ($arg eq '-v' || $arg eq '--verbose')
	{
		$verbose = 1;
	}
	elsif ($arg =~ /^-/)
	{
		my $value = '';
		$value = ' ' . shift @ARGV
		  if $takes_value{$arg} && @ARGV;
		warn "$me: ignoring \"$arg$value\": a prove option this runner does not implement\n";
	}
	else
	{
		push @tests, $arg;
	}
}
if (!@tests)
{
	print STDERR "usage: $me [-I DIR]... [--verbose] TEST.pl...\n";
	exit 2;
}

# Where the output of each test goes, next to the logs PostgreSQL::Test::Utils
# writes (it uses the same rule: $TESTDIR/tmp_check, else ./tmp_check).
# Its servers' data directories are under the same tmp_check.
my $tmp_check = $ENV{TESTDIR} ? "$ENV{TESTDIR}/tmp_check" : 'tmp_check';
my $logdir = "$tmp_check/log";

# What TAP::Harness tells the tests, so that they behave as under prove
# (Test::More, for one, formats its diagnostics for a harness).
$ENV{HARNESS_ACTIVE} = 1;
$ENV{HARNESS_VERSION} = $TAP::Parser::VERSION;
if ($verbose)
{
	$ENV{HARNESS_IS_VERBOSE} = 1;
	$ENV{TEST_VERBOSE} = 1;
}

# ---------------------------------------------------------------------------
# Running the files.
# ---------------------------------------------------------------------------

sub clock { return strftime('%H:%M:%S', localtime); }

sub plural
{
	my ($n, $word) = @_;
	return "$n $word" . ($n == 1 ? '' : 's');
}

# "7, 12, 13" -- the first few of a list of test numbers
sub number_list
{
	my @n = @_;
	return join(', ', @n) if @n <= 10;
	return join(', ', @n[ 0 .. 9 ]) . ', ...';
}

# Whether a line of output only repeats what the result line says
# ("# Looks like you failed 2 tests of 24.", "... exited with 255 ...",
# "# Tests were run but no plan was declared ..."), or is empty.
sub is_summary_noise
{
	my ($line) = @_;
	return $line =~ /^\s*#\s*(Looks like (you|your test)\b|Tests were run but no plan)/
	  || $line =~ /^\s*#?\s*$/;
}

# A test that uses PostgreSQL::Test::Utils sends its STDERR to its
# regress_log, so when it dies the TAP stream only says that it exited
# with 255 (or, after a croak, $! -- any number); the reason is the die
# message in that log.  It comes after the last test's line, and ends like
# Perl's "... at FILE line N." (Test::More's own "#   at FILE line N." are
# comments); it starts after the last line that the test framework wrote
# ("# Running: ...", "### Starting node ...", a test's "[time] ok 7"), and
# may span several lines (a croak from safe_psql quotes psql's error and
# the SQL).  Returns at most 6 of its lines; none if there is no such log
# or no such message.
sub die_message
{
	my ($regress_log) = @_;
	open my $fh, '<', $regress_log or return ();
	my @lines = <$fh>;
	close $fh;
	chomp @lines;

	# a test's line, with or without PostgreSQL 15's "[time](elapsed) "
	my $test_line = qr/^(\[[\d:.]+\]\([\d.]+s\) )?(not )?ok \d+/;
	my $after = 0;
	for my $i (0 .. $#lines)
	{
		$after = $i + 1 if $lines[$i] =~ $test_line;
	}
	my $end;
	for my $i ($after .. $#lines)
	{
		$end = $i if $lines[$i] =~ /\bline \d+\.$/ && $lines[$i] !~ /^\s*#/;
	}
	return () unless defined $end;
	my $begin = $end;
	$begin-- while $begin > $after
	  && $lines[ $begin - 1 ] !~ /^(\s*#|\[[\d:.]+\])/;
	my @message = @lines[ $begin .. $end ];
	@message = (@message[ 0 .. 3 ], '(...)', $message[-1]) if @message > 6;
	return @message;
}

# The processes below $pid, as "ps" shows them: a hung test's tree says
# which psql or server it waits for.
sub process_tree
{
	my ($pid) = @_;
	my %children;
	my %line;
	for (`ps -e -o pid=,ppid=,etimes=,args=`)
	{
		my ($p, $pp, $rest) = /^\s*(\d+)\s+(\d+)\s+(.*)$/ or next;
		push @{ $children{$pp} }, $p;
		$line{$p} = $rest;
	}
	my @out;
	my @todo = ([ $pid, 0 ]);
	while (my $next = shift @todo)
	{
		my ($p, $depth) = @$next;
		push @out, ('  ' x $depth) . "$p $line{$p}" if defined $line{$p};
		unshift @todo, map { [ $_, $depth + 1 ] } @{ $children{$p} || [] };
	}
	return @out;
}

# The running servers a test named $stem started: [ postmaster pid, data
# directory, port, socket directory ] from each live postmaster.pid under
# its tmp_check/t_<stem>_<node>_data/pgdata (PostgreSQL::Test::Cluster's
# layout).
sub test_servers
{
	my ($stem) = @_;
	my @servers;
	for my $pidfile (glob("$tmp_check/t_${stem}_*_data/pgdata/postmaster.pid"))
	{
		open my $fh, '<', $pidfile or next;
		my @l = <$fh>;
		close $fh;
		chomp @l;
		next unless @l >= 5 && $l[0] =~ /^\d+$/ && kill(0, $l[0]);
		push @servers, [ $l[0], $l[1], $l[3], $l[4] ];
	}
	return @servers;
}

# A file ran out of time: write what it waited for into its output, kill
# it, and stop its servers, so that the next file starts on a quiet
# machine.
sub stop_hung_test
{
	my ($pid, $stem, $out) = @_;
	print $out "$me: timed out after $file_timeout s (DC_TAP_FILE_TIMEOUT); its processes:\n";
	print $out map { "    $_\n" } process_tree($pid);
	for my $server (test_servers($stem))
	{
		my (undef, $datadir, $port, $sockdir) = @$server;
		print $out "$me: pg_stat_activity of the server in $datadir:\n";
		my $host = $sockdir ne '' ? $sockdir : 'localhost';
		print $out map { "    $_" } `timeout 10 psql -X -h '$host' -p $port -d postgres -c "SELECT pid, backend_type, state, wait_event_type, wait_event, now() - query_start AS running, left(query, 120) AS query FROM pg_stat_activity ORDER BY pid" 2>&1`;
	}
	kill 'TERM', $pid;
	for (1 .. 50)
	{
		last unless kill(0, $pid);
		select(undef, undef, undef, 0.1);
	}
	kill 'KILL', $pid if kill(0, $pid);
	for my $server (test_servers($stem))
	{
		system('pg_ctl', 'stop', '-s', '-m', 'immediate', '-D', $server->[1]) == 0
		  or kill 'KILL', $server->[0];
	}
	return;
}

# Runs one test file.  Returns a hash: status ('ok', 'skipped', 'failed'),
# tests (number run), seconds, and for a failure the reason.
sub run_test
{
	my ($test) = @_;
	my $name = basename($test);
	(my $stem = $name) =~ s/\.[^.]+$//;
	my $out_file = "$logdir/tap_$stem.out";
	my $start = time;

	print '[' . clock() . "] $name ...\n";

	if (!-f $test)
	{
		printf "[%s] %s FAILED (no such file)\n", clock(), $name;
		return { status => 'failed', tests => 0, seconds => 0, reason => 'no such file' };
	}

	make_path($logdir);
	open my $out, '>', $out_file
	  or die "$me: cannot write $out_file: $!\n";
	# readable while the test runs (tail -f)
	$out->autoflush(1);

	# -I goes in as switches; TAP::Parser passes them on in PERL5LIB, so
	# perl programs the test starts find the same modules.  STDERR is
	# merged into the stream so that diagnostics stay next to their test.
	my $parser = eval {
		TAP::Parser->new(
			{
				source => $test,
				switches => [ map { "-I$_" } @libs ],
				merge => 1,
			});
	};
	if (!$parser)
	{
		# its first line: the stack trace would not help
		my ($why) = split /\n/, ($@ || 'unknown error');
		print $out "$me: cannot run $test: $why\n";
		close $out;
		printf "[%s] %s FAILED (cannot run it)\n    %s\n", clock(), $name, $why;
		return { status => 'failed', tests => 0, seconds => time - $start,
			reason => 'cannot run it' };
	}

	# the failed tests, each as its "not ok" line and the lines after it
	my @failures;
	# what came after the last test line (a crash's last words)
	my @trailer;
	my $bailout;
	my $in_failure = 0;

	# The time limit: the alarm kills the test, which ends its output, so
	# the loop below ends as it would.
	my $timed_out = 0;
	my $test_pid = $parser->_iterator->{pid};
	local $SIG{ALRM} = sub {
		$timed_out = 1;
		stop_hung_test($test_pid, $stem, $out) if $test_pid;
	};
	alarm($file_timeout);
	while (my $result = $parser->next)
	{
		my $line = $result->raw;
		print $out "$line\n";
		print "$line\n" if $verbose;

		if ($result->is_test)
		{
			@trailer = ();
			$in_failure = !$result->is_ok;
			push @failures, [$line] if $in_failure;
		}
		elsif ($result->is_bailout)
		{
			$bailout = $result->explanation;
			$in_failure = 0;
		}
		elsif ($result->is_plan)
		{
			$in_failure = 0;
		}
		elsif (!is_summary_noise($line))
		{
			# a failure's diagnostics, or last words (said only once)
			if ($in_failure)
			{
				push @{ $failures[-1] }, $line;
			}
			else
			{
				push @trailer, $line;
			}
		}
	}
	alarm(0);
	close $out;

	my $seconds = time - $start;
	my $run = $parser->tests_run;

	if ($parser->skip_all && !$parser->has_problems)
	{
		printf "[%s] %s skipped: %s\n", clock(), $name, $parser->skip_all;
		return { status => 'skipped', tests => 0, seconds => $seconds };
	}

	# Why the file failed, if it did, in a few words.
	my @why;
	push @why, "timed out after $file_timeout s" if $timed_out;
	my @failed = $parser->failed;
	push @why, sprintf('%d of %d failed: %s', scalar @failed, $run, number_list(@failed))
	  if @failed;
	push @why, "bailed out: $bailout" if defined $bailout;
	if (!$parser->plan)
	{
		push @why, 'no plan';
	}
	elsif (!$parser->skip_all && $parser->tests_planned != $run)
	{
		push @why, sprintf('planned %d, ran %d', $parser->tests_planned, $run);
	}
	# the plan's errors are said above; any others are shown below
	my @tap_errors = grep { !/^(Bad plan|No plan found)/ } $parser->parse_errors;
	push @why, 'bad TAP' if @tap_errors;
	if (my $sig = $parser->wait & 127)
	{
		push @why, "killed by signal $sig";
	}
	elsif ($parser->exit)
	{
		push @why, 'exit ' . $parser->exit;
	}

	if (!@why)
	{
		my @extra = (plural($run, 'test'));
		push @extra, $parser->skipped . ' skipped' if $parser->skipped;
		printf "[%s] %s ok (%.1f s, %s)\n", clock(), $name, $seconds, join(', ', @extra);
		return { status => 'ok', tests => $run, seconds => $seconds };
	}

	my $reason = join('; ', @why);
	printf "[%s] %s FAILED (%s)\n", clock(), $name, $reason;

	# The report: what went wrong, then where to read more.
	my @report;
	push @report, map { "TAP error: $_" } @tap_errors;
	foreach my $failure (@failures)
	{
		my @lines = @$failure;
		if (@lines > MAX_TEST_LINES)
		{
			my $more = @lines - (MAX_TEST_LINES - 1);
			splice(@lines, MAX_TEST_LINES - 1);
			push @lines, "    ($more more lines)";
		}
		push @report, @lines;
	}
	# Ended early or badly: its last words, if it said any after its last
	# test, else (its STDERR having gone to its log) the die message.
	my $regress_log = "$logdir/regress_log_$stem";
	if ($parser->exit || $parser->wait || !$parser->is_good_plan || defined $bailout)
	{
		my @last = @trailer > 5 ? @trailer[ -5 .. -1 ] : @trailer;
		if (!@last)
		{
			my @message = die_message($regress_log);
			@last = ("died (from regress_log_$stem):", map { "    $_" } @message)
			  if @message;
		}
		push @report, @last;
	}

	my @where = ("full output: $out_file");
	push @where, "test log:    $regress_log" if -e $regress_log;
	my @server_logs = glob("$logdir/${stem}_*.log");
	push @where, sprintf('server logs: %s/%s_*.log (%d files)', $logdir, $stem, scalar @server_logs)
	  if @server_logs;

	my $room = MAX_REPORT_LINES - @where;
	if (@report > $room)
	{
		my $more = @report - ($room - 1);
		splice(@report, $room - 1);
		push @report, "... ($more more lines)";
	}
	# long lines (a quoted SQL script, a huge "got") are cut in the
	# middle, keeping the end, which says where (the full output has them)
	print map { '    ' . (length > 240 ? substr($_, 0, 150) . ' ... ' . substr($_, -85) : $_) . "\n" }
	  @report, @where;

	return { status => 'failed', tests => $run, seconds => $seconds, reason => $reason };
}

# ---------------------------------------------------------------------------
# All of them, then the summary.
# ---------------------------------------------------------------------------
my $start = time;
my $tests = 0;
my @failed;
foreach my $test (@tests)
{
	# A bail out (PostgreSQL::Test::Utils bails out when a server does not
	# start, say) ends only its own file: unlike prove, go on with the
	# others, whose results are as worth knowing.
	my $r = run_test($test);
	$tests += $r->{tests};
	push @failed, "$test ($r->{reason})" if $r->{status} eq 'failed';
}

print "\n";
if (@failed)
{
	print "Failed files:\n";
	print map { "    $_\n" } @failed;
}
printf "Files=%d, Tests=%d, %.1f s\n", scalar @tests, $tests, time - $start;
print 'Result: ' . (@failed ? 'FAIL' : 'PASS') . "\n";
exit(@failed ? 1 : 0);
