#!/usr/bin/perl
#
# test/check_docs.pl
#     Fails unless every function and view of the extension script is in
#     the SQL reference (docs/sql-api.md) and every setting in
#     docs/settings.md, each as a heading or as a name in backquotes.
#
#     Usage: perl test/check_docs.pl [TOP]
#
use strict;
use warnings;

my $top = shift // '.';

sub slurp
{
	my ($path) = @_;
	open(my $fh, '<', $path) or die "check_docs: $path: $!\n";
	local $/;
	my $text = <$fh>;
	close $fh;
	return $text;
}

my $script = join('', map { slurp($_) } glob "$top/sql/durable_cluster--*.sql");
my $reference = slurp("$top/docs/sql-api.md");
my $settings_doc = slurp("$top/docs/settings.md");
my $settings_src = slurp("$top/src/settings.c");

my %functions = map { $_ => 1 } $script =~ /CREATE (?:OR REPLACE )?FUNCTION\s+([\w.]+)/g;
my %views = map { $_ => 1 } $script =~ /CREATE (?:OR REPLACE )?VIEW\s+([\w.]+)/g;
my %settings = map { $_ => 1 } $settings_src =~ /Define\w+Variable\("([\w.]+)"/g;

my @missing;
for my $name (sort keys %functions, sort keys %views)
{
	push @missing, "docs/sql-api.md: $name" unless $reference =~ /`\Q$name\E[`(]/;
}
for my $name (sort keys %settings)
{
	push @missing, "docs/settings.md: $name" unless $settings_doc =~ /`\Q$name\E`/;
}
if (@missing)
{
	print "check_docs: not documented:\n", map { "    $_\n" } @missing;
	exit 1;
}
printf "check_docs: %d functions, %d views and %d settings documented\n",
  scalar(keys %functions), scalar(keys %views), scalar(keys %settings);
exit 0;
