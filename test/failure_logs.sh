#
# test/failure_logs.sh
#     Shell functions that print what a failed suite left behind, sourced by
#     test/run_tests.sh and test/in_chroot.sh.  CI keeps only the output of
#     .ci/run, so a failure must be explained there: the TAP log of every
#     failed test file and the complaints in its servers' logs.
#

# Print at most $2 lines of file $1 under a header, if it exists.
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

# Server logs can be long (the TAP tests log every statement); what is worth
# reading after a failure is the complaints and the last stretch.
show_server_log()
{
	local file=$1

	[ -f "$file" ] || return 0
	echo
	echo "======== $file: ERROR/FATAL/PANIC/WARNING and crash lines (at most 200) ========"
	grep -E 'ERROR|FATAL|PANIC|WARNING|TRAP|terminated by signal|exited with exit code' "$file" | tail -n 200 || true
	show_file "$file" 150
}

# For each test file that prove's summary in $1 lists as failed, its TAP
# log and its servers' logs from the tmp_check/log directory $2.  The
# servers' logs are named <test file>_<server>.log by
# PostgreSQL::Test::Cluster.
show_failed_tap_logs()
{
	local out=$1 logdir=$2 t name f

	for t in $(sed -n 's|^\(test/t/[0-9A-Za-z_]*\)\.pl *(Wstat.*|\1|p' "$out" | sort -u); do
		name=$(basename "$t")
		show_file "$logdir/regress_log_$name" 400
		for f in "$logdir/${name}"_*.log; do
			show_server_log "$f"
		done
	done
}
