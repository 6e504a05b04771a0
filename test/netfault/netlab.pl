#!/usr/bin/perl
#
# test/netfault/netlab.pl
#     The root half of the network-fault test: a small lab of network
#     namespaces and the faults made in it, run by test/run_tests.sh (as
#     root) for the TAP test test/t/021_network_faults.pl (as the suite's
#     unprivileged user).
#
# PostgreSQL refuses to run as root and the TAP framework runs initdb, so
# the test cannot be root itself.  Instead this program serves it over a
# Unix socket that only the suite's user may open, and does a fixed,
# checked set of things for it -- nothing else:
#
#   up NAME...              make a namespace per NAME (at most 4, lower-case
#                           words), each with one veth "eth0" to a bridge in a
#                           namespace of its own; answers "ok NAME=ADDRESS ..."
#   start NAME PGDATA LOG   start the server in PGDATA inside NAME's namespace,
#                           as the suite's user (pg_ctl -w); PGDATA and LOG
#                           must be under the suite's directory
#   fault NAME cut          drop everything in and out of NAME's eth0
#   fault NAME asym         drop only what comes in (NAME's packets still
#                           leave: the others see its requests, it never sees
#                           their answers)
#   fault NAME loss PCT     drop PCT % of the packets, both ways
#   fault NAME delay MS     hold every packet MS milliseconds, both ways (an
#                           NFQUEUE rule and test/netfault/nfq_delay)
#   heal NAME               remove NAME's fault
#   down                    kill every process in the lab's namespaces and
#                           delete them
#
# Every answer is one line: "ok ..." or "error: ...".  The addresses are
# 10.213.0.0/24 inside the lab's namespaces only; the host's own network is
# not touched.  Faults are nftables rules in a table of NAME's namespace,
# but the delay, for which this kernel's nf_tables has no queue expression:
# that one is an iptables (xtables, through nft_compat) NFQUEUE rule.
#
# Usage (root):
#   netlab.pl serve SOCKET USER ROOTDIR BINDIR   serve until "down" or SIGTERM
#   netlab.pl cleanup PREFIX                     delete leftover namespaces
#
# Copyright (c) 2026, the durable_cluster developers
#

use strict;
use warnings;

use Cwd qw(realpath);
use File::Basename qw(dirname);
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_STREAM);

my $here = dirname(realpath($0));
my $subnet = '10.213.0';
my %lab;                         # NAME => { ns => ..., address => ..., delay_pid => ... }
my ($prefix, $user, $rootdir, $bindir);

sub run
{
	my (@cmd) = @_;
	my $out = `@{[ map { quotemeta } @cmd ]} 2>&1`;
	die "'@cmd' failed: $out" if $? != 0;
	return $out;
}

sub in_ns
{
	my ($ns, @cmd) = @_;
	return run('ip', 'netns', 'exec', $ns, @cmd);
}

sub nft
{
	my ($ns, $script) = @_;
	my $file = "/tmp/netlab_$$.nft";
	open my $fh, '>', $file or die "cannot write $file: $!";
	print $fh $script;
	close $fh;
	my $out = eval { in_ns($ns, 'nft', '-f', $file) };
	my $err = $@;
	unlink $file;
	die $err if $err;
	return $out;
}

sub lab_namespaces
{
	my ($p) = @_;
	my $list = `ip netns list 2>/dev/null`;
	return grep { /^\Q$p\E_/ } map { (split ' ')[0] } split /\n/, $list;
}

sub down
{
	my ($p) = @_;
	for my $name (keys %lab)
	{
		kill 'TERM', $lab{$name}{delay_pid} if $lab{$name}{delay_pid};
	}
	for my $ns (lab_namespaces($p))
	{
		# the servers started in it, and anything else left there
		my @pids = split ' ', `ip netns pids $ns 2>/dev/null`;
		kill 'KILL', @pids if @pids;
		system('ip', 'netns', 'delete', $ns);
	}
	%lab = ();
	return 'ok';
}

sub up
{
	my (@names) = @_;
	die "already up\n" if %lab;
	die "give 1 to 4 names\n" if @names < 1 || @names > 4;
	my %seen;
	for (@names)
	{
		die "bad name '$_'\n" unless /^[a-z]{1,8}$/ && !$seen{$_}++;
	}
	my $hub = "${prefix}_hub";
	run('ip', 'netns', 'add', $hub);
	in_ns($hub, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
	in_ns($hub, 'ip', 'link', 'set', 'br0', 'up');
	my @answer;
	my $i = 0;
	for my $name (@names)
	{
		$i++;
		my $ns = "${prefix}_$name";
		my $address = "$subnet.$i";
		run('ip', 'netns', 'add', $ns);
		in_ns($ns, 'ip', 'link', 'set', 'lo', 'up');
		# the pair is made in the hub and one end moved: no name is
		# ever created in the host's namespace
		in_ns($hub, 'ip', 'link', 'add', "p$i", 'type', 'veth', 'peer', 'name', 'eth0',
			'netns', $ns);
		in_ns($hub, 'ip', 'link', 'set', "p$i", 'master', 'br0');
		in_ns($hub, 'ip', 'link', 'set', "p$i", 'up');
		in_ns($ns, 'ip', 'addr', 'add', "$address/24", 'dev', 'eth0');
		in_ns($ns, 'ip', 'link', 'set', 'eth0', 'up');
		$lab{$name} = { ns => $ns, address => $address };
		push @answer, "$name=$address";
	}
	return "ok @answer";
}

sub under_rootdir
{
	my ($path) = @_;
	die "bad path '$path'\n" unless $path =~ m{^/[\w./-]+$} && $path !~ m{/\.\.?(/|$)};
	return $path if index($path, "$rootdir/") == 0;
	die "path '$path' is not under $rootdir\n";
}

sub start
{
	my ($name, $pgdata, $log) = @_;
	my $l = $lab{ $name // '' } or die "no such namespace\n";
	under_rootdir($pgdata);
	under_rootdir($log);
	in_ns($l->{ns}, 'runuser', '-u', $user, '--', "$bindir/pg_ctl", '-w', '-t', '120',
		'-D', $pgdata, '-l', $log, 'start');
	return 'ok';
}

sub heal
{
	my ($name) = @_;
	my $l = $lab{ $name // '' } or die "no such namespace\n";
	# first the rules, so that nothing is queued to a program that is gone
	system("ip netns exec $l->{ns} nft delete table inet netlab 2>/dev/null");
	if ($l->{delay_pid})
	{
		in_ns($l->{ns}, 'iptables', '-F', 'INPUT');
		in_ns($l->{ns}, 'iptables', '-F', 'OUTPUT');
		kill 'TERM', $l->{delay_pid};
		waitpid($l->{delay_pid}, 0);
		delete $l->{delay_pid};
	}
	return 'ok';
}

sub fault
{
	my ($name, $kind, $arg) = @_;
	my $l = $lab{ $name // '' } or die "no such namespace\n";
	$kind //= '';
	heal($name);
	my $drop_in = '';
	my $drop_out = '';
	if ($kind eq 'cut')
	{
		($drop_in, $drop_out) = ('iifname "eth0" drop', 'oifname "eth0" drop');
	}
	elsif ($kind eq 'asym')
	{
		$drop_in = 'iifname "eth0" drop';
	}
	elsif ($kind eq 'loss')
	{
		die "loss needs a percentage 1..99\n" unless ($arg // '') =~ /^\d+$/ && $arg >= 1 && $arg <= 99;
		($drop_in, $drop_out) = (
			"iifname \"eth0\" numgen random mod 100 < $arg drop",
			"oifname \"eth0\" numgen random mod 100 < $arg drop");
	}
	elsif ($kind eq 'delay')
	{
		die "delay needs milliseconds 1..60000\n"
		  unless ($arg // '') =~ /^\d+$/ && $arg >= 1 && $arg <= 60000;
		my $pid = fork();
		die "fork: $!\n" unless defined $pid;
		if ($pid == 0)
		{
			{ exec('ip', 'netns', 'exec', $l->{ns}, "$here/nfq_delay", '1', $arg) };
			POSIX::_exit(127);
		}
		$l->{delay_pid} = $pid;
		# the queue must have its reader before packets are sent to it
		# (--queue-bypass lets them through meanwhile)
		select(undef, undef, undef, 0.3);
		die "nfq_delay did not start\n" if waitpid($pid, POSIX::WNOHANG()) == $pid;
		in_ns($l->{ns}, 'iptables', '-A', 'INPUT', '-i', 'eth0', '-j', 'NFQUEUE',
			'--queue-num', '1', '--queue-bypass');
		in_ns($l->{ns}, 'iptables', '-A', 'OUTPUT', '-o', 'eth0', '-j', 'NFQUEUE',
			'--queue-num', '1', '--queue-bypass');
		return 'ok';
	}
	else
	{
		die "unknown fault '$kind'\n";
	}
	my $in = $drop_in ? "$drop_in\n" : '';
	my $out = $drop_out ? "$drop_out\n" : '';
	nft($l->{ns}, <<"EOF");
table inet netlab {
	chain input { type filter hook input priority 0; policy accept;
		$in}
	chain output { type filter hook output priority 0; policy accept;
		$out}
}
EOF
	return 'ok';
}

sub handle
{
	my ($line) = @_;
	my ($cmd, @args) = split ' ', $line;
	$cmd //= '';
	return up(@args) if $cmd eq 'up';
	return start(@args) if $cmd eq 'start';
	return fault(@args) if $cmd eq 'fault';
	return heal(@args) if $cmd eq 'heal';
	return down($prefix) if $cmd eq 'down';
	die "unknown command '$cmd'\n";
}

sub serve
{
	my ($socket_path) = @_;
	my $uid = getpwnam($user) // die "no user $user\n";
	unlink $socket_path;
	my $listener = IO::Socket::UNIX->new(Local => $socket_path, Type => SOCK_STREAM, Listen => 4)
	  or die "cannot listen on $socket_path: $!\n";
	chown $uid, -1, $socket_path or die "chown $socket_path: $!\n";
	chmod 0600, $socket_path;
	my $stop = 0;
	local $SIG{TERM} = sub { $stop = 1; };
	local $SIG{INT} = sub { $stop = 1; };
	while (!$stop)
	{
		my $client = $listener->accept or next;
		while (my $line = <$client>)
		{
			chomp $line;
			my $answer = eval { handle($line) };
			if (!defined $answer)
			{
				(my $e = $@) =~ s/\s+/ /g;
				$answer = "error: $e";
			}
			print $client "$answer\n";
			$client->flush;
		}
		close $client;
	}
	down($prefix);
	unlink $socket_path;
	return;
}

my $mode = shift @ARGV // '';
die "netlab.pl: must run as root\n" if $> != 0;
if ($mode eq 'serve' && @ARGV == 4)
{
	my $socket_path;
	($socket_path, $user, $rootdir, $bindir) = @ARGV;
	$rootdir = realpath($rootdir);
	$prefix = "dcnet$$";
	serve($socket_path);
}
elsif ($mode eq 'cleanup' && @ARGV == 1)
{
	$prefix = $ARGV[0];
	down($prefix);
}
else
{
	die "usage: netlab.pl serve SOCKET USER ROOTDIR BINDIR | netlab.pl cleanup PREFIX\n";
}
