#!/usr/bin/perl
#
# test/check_layers.pl
#     Fails when source files depend on each other in a cycle.  File A
#     depends on file B when A's object calls a function or uses a variable
#     that B's object defines (nm of the built objects), or when src/A.c or
#     include/A.h includes B.h.  The files then fall into layers that only
#     depend downward; with --verbose the script prints them, lowest first
#     (src/README.md describes them).
#
#     Usage: perl test/check_layers.pl [--verbose] [TOP]   (after the build)
#
use strict;
use warnings;

my $verbose = @ARGV && $ARGV[0] eq '--verbose' ? shift : undef;
my $top = shift // '.';
my (%defined, %deps, %why);

my @sources = map { m{/(\w+)\.c$} ? $1 : () } glob "$top/src/*.c";
my @headers = map { m{/(\w+)\.h$} ? $1 : () } glob "$top/include/*.h";
my %files = map { $_ => 1 } @sources, @headers;

sub symbols
{
	my ($file) = @_;
	my $object = "$top/src/$file.o";
	die "check_layers: $object is missing; build first\n" unless -e $object;
	return `nm $object`;
}

for my $file (@sources)
{
	for (symbols($file))
	{
		$defined{$1} = $file if /^\S+\s+[TDBR]\s+(\S+)$/;
	}
}

sub depend
{
	my ($from, $to, $reason) = @_;
	return if $from eq $to;
	$deps{$from}{$to} = 1;
	$why{"$from $to"} //= $reason;
}

for my $file (@sources)
{
	for (symbols($file))
	{
		depend($file, $defined{$1}, "uses $1") if /^\s+U\s+(\S+)$/ && exists $defined{$1};
	}
}
for my $file (keys %files)
{
	for my $path ("$top/src/$file.c", "$top/include/$file.h")
	{
		next unless -e $path;
		open(my $fh, '<', $path) or die "check_layers: $path: $!\n";
		while (<$fh>)
		{
			depend($file, $1, "includes $1.h") if /^#include "(\w+)\.h"/ && $files{$1};
		}
		close $fh;
	}
}

# strongly connected components (Tarjan): any of more than one file is a cycle
my ($index, %index, %low, @stack, %on_stack, @cycles) = (0);

sub visit
{
	my ($v) = @_;
	$index{$v} = $low{$v} = $index++;
	push @stack, $v;
	$on_stack{$v} = 1;
	for my $w (sort keys %{ $deps{$v} || {} })
	{
		if (!exists $index{$w})
		{
			visit($w);
			$low{$v} = $low{$w} if $low{$w} < $low{$v};
		}
		elsif ($on_stack{$w})
		{
			$low{$v} = $index{$w} if $index{$w} < $low{$v};
		}
	}
	if ($low{$v} == $index{$v})
	{
		my @component;
		my $w;
		do
		{
			$w = pop @stack;
			delete $on_stack{$w};
			push @component, $w;
		} while ($w ne $v);
		push @cycles, [ sort @component ] if @component > 1;
	}
}
visit($_) for grep { !exists $index{$_} } sort keys %files;

if (@cycles)
{
	for my $cycle (@cycles)
	{
		my %in = map { $_ => 1 } @$cycle;
		print "check_layers: files that depend on each other: @$cycle\n";
		for my $a (@$cycle)
		{
			print "    $a -> $_ ($why{\"$a $_\"})\n"
			  for grep { $in{$_} } sort keys %{ $deps{$a} || {} };
		}
	}
	exit 1;
}

# the layers: a file sits one above the highest file it depends on
my %level;

sub level
{
	my ($v) = @_;
	return $level{$v} if exists $level{$v};
	my $l = 0;
	for my $w (keys %{ $deps{$v} || {} })
	{
		my $lw = level($w) + 1;
		$l = $lw if $lw > $l;
	}
	return $level{$v} = $l;
}
level($_) for keys %files;
my $max = 0;
$max = $level{$_} > $max ? $level{$_} : $max for keys %level;
print "check_layers: no cycle among ", scalar(keys %files), " files in ", $max + 1, " layers",
  $verbose ? ", lowest first:\n" : " (--verbose lists them)\n";
for my $l ($verbose ? (0 .. $max) : ())
{
	print "    $l: ", join(' ', sort grep { $level{$_} == $l } keys %level), "\n";
}
exit 0;
