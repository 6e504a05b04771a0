#
# test/failure_logs.sh
#     Shell functions that print what a failed suite left behind, sourced by
#     test/run_tests.sh and test/in_chroot.sh.  CI keeps only the output of
#     .ci/run, and the temporary tree with the full logs is usually gone by
#     the time anyone looks, so a failure must be explained there -- but
#     briefly: a short excerpt of each log that says what went wrong, with
#     the path of the full log for whoever still has it.  The TAP tests'
#     own report (test/tap_run.pl) already shows the failed tests and their
#     diagnostics; what is added here is what led up to a failure and the
#     complaints of the servers involved.
#

# Print at most $2 lines of file $1 (the last ones) under a header, if it
# exists.
show_file()
{
	local file=$1 max=$2 lines

	[ -f "$file" ] || return 0
	lines=$(wc -l < "$file")
	echo
	if [ "$lines" -gt "$max" ]; then
		echo "======== $file (last $max of $lines lines) ========"
		tail -n "$max" "$file"
	else
		echo "======== $file ========"
		cat "$file"
	fi
	echo "======== end of $file ========"
}

# The complaints in server log $1: at most $2 (default 20) ERROR, FATAL,
# PANIC and crash lines, then its last $3 (default 10) lines, then its
# path.  The TAP tests provoke errors on purpose, so a log can hold
# thousands of ERROR lines; a crash, a PANIC or a failed assertion (TRAP)
# is rarer and says more, so those are taken first and the latest other
# complaints fill the rest, printed in the log's order.  What every
# shutdown logs (FATAL "... due to administrator command") is left out,
# and so are background workers' exit code 1, their ordinary exit.
show_server_log()
{
	local file=$1 max=${2:-20} tail_lines=${3:-10}

	[ -f "$file" ] || return 0
	echo
	awk -v max="$max" -v tail_lines="$tail_lines" -v file="$file" '
		/PANIC|TRAP:|terminated by signal|exited with exit code ([2-9]|[1-9][0-9])|terminated; reinitializing/ {
			crash[++ncrash] = NR; text[NR] = $0
		}
		!/PANIC|TRAP:|terminated by signal|exited with exit code ([2-9]|[1-9][0-9])|terminated; reinitializing/ && /(ERROR|FATAL):/ \
		  && !/due to administrator command/ {
			other[++nother] = NR; text[NR] = $0
		}
		# the last tail_lines lines, in a ring
		tail_lines > 0 { last[NR % tail_lines] = $0 }
		END {
			n = ncrash + nother
			if (n == 0)
				print "======== " file ": no ERROR/FATAL/PANIC/crash lines ========"
			else if (n > max)
				print "======== " file ": " max " of its " n \
					" ERROR/FATAL/PANIC/crash lines (crashes first, then the latest) ========"
			else
				print "======== " file ": its " n " ERROR/FATAL/PANIC/crash line" (n == 1 ? "" : "s") " ========"
			taken = 0
			for (i = (ncrash > max ? ncrash - max + 1 : 1); i <= ncrash; i++) {
				pick[crash[i]] = 1; taken++
			}
			room = max - taken
			for (i = (nother > room ? nother - room + 1 : 1); room > 0 && i <= nother; i++)
				pick[other[i]] = 1
			for (i = 1; i <= NR; i++)
				if (i in pick)
					print text[i]
			if (tail_lines > 0 && NR > 0) {
				from = NR > tail_lines ? NR - tail_lines + 1 : 1
				print "-------- its last " NR - from + 1 " line" (NR > from ? "s" : "") " --------"
				for (i = from; i <= NR; i++)
					print last[i % tail_lines]
			}
			if (n > 0 || tail_lines > 0)
				print "======== end of " file " (" NR " line" (NR == 1 ? "" : "s") ") ========"
		}' "$file"
}

# The part of TAP log $1 (a regress_log) that explains the failure: what
# led up to its first failed test (the commands, their output), or, if no
# test failed (the test died, or its plan was wrong), its last 40 lines,
# where the die message is.
show_regress_log_excerpt()
{
	local file=$1 lines first from to

	[ -f "$file" ] || return 0
	lines=$(wc -l < "$file")
	# "not ok 7", or PostgreSQL 15's "[12:00:01.123](0.5s) not ok 7"; not a TODO
	first=$(awk '/(^|\) )not ok [0-9]+/ && !/# *TODO/ { print NR; exit }' "$file")
	if [ -n "$first" ]; then
		from=$((first > 25 ? first - 25 : 1))
		to=$((first + 8 > lines ? lines : first + 8))
		echo "-------- $file: lines $from-$to of $lines, up to its first failed test --------"
		sed -n "${from},${to}p" "$file"
	else
		echo "-------- $file: last 40 of $lines lines --------"
		tail -n 40 "$file"
	fi
}

# For each test file that test/tap_run.pl's output $1 reports as failed
# ("[11:42:41] 003_failover.pl FAILED (...)"), an excerpt of its TAP log
# and the complaints of each of its servers, from the tmp_check/log
# directory $2, and where the full logs are.  PostgreSQL::Test::Utils and
# ::Cluster name those logs after the test file: regress_log_<name> and
# <name>_<server>.log; tap_run.pl adds tap_<name>.out.
show_failed_tap_logs()
{
	local out=$1 logdir=$2 name f dir

	dir=$(cd "$logdir" 2>/dev/null && pwd) || dir=$logdir
	for name in $(sed -n 's/^\[[0-9:]*\] \([0-9A-Za-z_.-]*\)\.pl FAILED.*/\1/p' "$out" | sort -u); do
		echo
		echo "======== $name failed: excerpts of its logs ========"
		echo "(full logs in $dir: tap_$name.out, regress_log_$name, ${name}_*.log)"
		show_regress_log_excerpt "$dir/regress_log_$name"
		for f in "$dir/${name}"_*.log; do
			show_server_log "$f" 20 0
		done
		echo "======== end of $name ========"
	done
}
