/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  How long the store keeps what only retries and audits need: the
 *	  command log by age (durable_cluster.command_log_retention) and
 *	  finished transfers (durable_cluster.saga_retention).  Run by the saga
 *	  worker of the store's server, a round every heartbeat_interval.
 *
 * The per-entity cap of the command log is kept by write_batch itself
 * (store_batch.c); this file removes what is too old.
 *
 * Age without a column: command_log rows carry no time, only seq, taken
 * from command_log_seq as the batch writes them.  A round writes down now
 * and then where that sequence stood (durable_cluster.command_log_marks,
 * about a hundred marks per retention period); every entry with a seq up
 * to the newest mark older than the retention was logged before that mark
 * was taken, so it is at least that old.  Entries thus live between the
 * retention and the retention plus one mark interval, and the rows keep the
 * layout 0.1 wrote (a node of 0.1 writes them unchanged during a rolling
 * upgrade).
 *
 * A round is short: at most RETENTION_BATCH rows of each table, found
 * through an index on their age (command_log by seq, sagas by updated_at
 * among the finished ones) and deleted by ctid, in one transaction.  When a
 * round removed that many, the worker runs the next one at once, so a
 * backlog drains without any round holding locks for long.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "retention.h"
#include "settings.h"
#include "state_table.h"

/* rows of each table one round removes at most */
#define RETENTION_BATCH		2000

/* marks per retention period: the precision of the command log's age */
#define MARKS_PER_RETENTION	100

static uint64
run(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) != expected)
		elog(ERROR, "durable_cluster retention: could not run: %s", sql);
	return SPI_processed;
}

/*
 * One round, inside the caller's transaction.  Returns true when it
 * removed a full batch of some table, so that more may be waiting.  Does
 * nothing unless the extension is installed at this library's version:
 * during an upgrade the tables may not be the ones this file knows (the
 * nodes say so in the log).
 */
bool
dc_retention_round(void)
{
	Datum		log_age = Int32GetDatum(dc_command_log_retention_s);
	Datum		mark_every = Int32GetDatum(Max(dc_command_log_retention_s / MARKS_PER_RETENTION, 1));
	Datum		saga_age = Int32GetDatum(dc_saga_retention_s);
	Datum		limit = Int32GetDatum(RETENTION_BATCH);
	uint64		log_removed;
	uint64		sagas_removed;

	Oid			extension;

	if (!dc_extension_is_current(&extension))
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* where the log's sequence stands, if the newest mark is old enough */
	run("INSERT INTO durable_cluster.command_log_marks (marked_at, seq)"
		" SELECT now(), CASE WHEN is_called THEN last_value ELSE 0 END"
		"   FROM durable_cluster.command_log_seq"
		"  WHERE NOT EXISTS (SELECT FROM durable_cluster.command_log_marks"
		"                     WHERE marked_at > now() - $1 * interval '1 second')",
		1, (Oid[]) {INT4OID}, (Datum[]) {mark_every}, SPI_OK_INSERT);

	/* the entries logged before the newest mark that is old enough */
	log_removed = run(
		"DELETE FROM durable_cluster.command_log WHERE ctid = ANY (ARRAY("
		" SELECT ctid FROM durable_cluster.command_log"
		"  WHERE seq <= (SELECT seq FROM durable_cluster.command_log_marks"
		"                 WHERE marked_at <= now() - $1 * interval '1 second'"
		"                 ORDER BY marked_at DESC LIMIT 1)"
		"  ORDER BY seq LIMIT $2))",
		2, (Oid[]) {INT4OID, INT4OID}, (Datum[]) {log_age, limit}, SPI_OK_DELETE);

	/* marks before that one tell nothing more */
	run("DELETE FROM durable_cluster.command_log_marks"
		" WHERE marked_at < (SELECT marked_at FROM durable_cluster.command_log_marks"
		"                     WHERE marked_at <= now() - $1 * interval '1 second'"
		"                     ORDER BY marked_at DESC LIMIT 1)",
		1, (Oid[]) {INT4OID}, (Datum[]) {log_age}, SPI_OK_DELETE);

	/* finished transfers; running ones stay whatever their age */
	sagas_removed = run(
		"DELETE FROM durable_cluster.sagas WHERE ctid = ANY (ARRAY("
		" SELECT ctid FROM durable_cluster.sagas"
		"  WHERE status <> 'running' AND updated_at < now() - $1 * interval '1 second'"
		"  ORDER BY updated_at LIMIT $2))",
		2, (Oid[]) {INT4OID, INT4OID}, (Datum[]) {saga_age, limit}, SPI_OK_DELETE);

	SPI_finish();
	return log_removed == RETENTION_BATCH || sagas_removed == RETENTION_BATCH;
}
