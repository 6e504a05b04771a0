/*-------------------------------------------------------------------------
 *
 * store.c
 *	  The only code that reads or writes the cluster tables on behalf of
 *	  node workers: membership, the shard map, fencing and entity state.
 *
 * Statements are prepared once per process and kept (SPI_keepplan).  Batch
 * writes pass whole arrays to a single statement over unnest(), so a batch
 * costs a handful of statements however many commands it holds.
 *
 * Fencing: before a node applies a batch it locks the rows of the shards it
 * is about to write (FOR SHARE) and checks that it still owns them at the
 * epoch it was given.  A change of owner updates those rows, so it waits for
 * the batch to commit, and a batch that starts after the change sees the new
 * epoch and refuses to write: a node that lost a shard cannot commit to it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "durable_cluster.h"
#include "inbox.h"
#include "store.h"

typedef enum StorePlan
{
	PLAN_JOIN,
	PLAN_LEAVING,
	PLAN_HEARTBEAT,
	PLAN_LEAVE,
	PLAN_RECONCILE,
	PLAN_MAP_VERSION,
	PLAN_MAP,
	PLAN_FENCE,
	PLAN_LOAD,
	PLAN_UPDATE,
	PLAN_INSERT,
	NUM_PLANS
} StorePlan;

typedef struct PlanSpec
{
	const char *sql;
	int			nargs;
	Oid			argtypes[6];
} PlanSpec;

static const PlanSpec plan_specs[NUM_PLANS] = {
	[PLAN_JOIN] = {
		"SELECT durable_cluster.node_join($1, $2, $3, $4, $5::text[])",
		5, {TEXTOID, INT4OID, TEXTOID, INT4OID, TEXTOID}
	},
	[PLAN_LEAVING] = {
		"SELECT durable_cluster.node_leaving($1, $2)",
		2, {TEXTOID, INT8OID}
	},
	[PLAN_HEARTBEAT] = {
		"UPDATE durable_cluster.members SET last_heartbeat = clock_timestamp() "
		" WHERE name = $1 AND incarnation = $2 AND status = 'up'",
		2, {TEXTOID, INT8OID}
	},
	[PLAN_LEAVE] = {
		"SELECT durable_cluster.node_leave($1, $2, $3)",
		3, {TEXTOID, INT8OID, INT4OID}
	},
	[PLAN_RECONCILE] = {
		"SELECT durable_cluster.reconcile($1)",
		1, {INT4OID}
	},
	[PLAN_MAP_VERSION] = {
		"SELECT map_version FROM durable_cluster.settings",
		0, {0}
	},
	[PLAN_MAP] = {
		"SELECT st.map_version, st.number_of_shards, s.shard_id, m.node_index, s.epoch "
		"  FROM durable_cluster.settings st "
		" CROSS JOIN durable_cluster.shards s "
		"  LEFT JOIN durable_cluster.members m ON m.name = s.node AND m.status = 'up'",
		0, {0}
	},
	[PLAN_FENCE] = {
		"SELECT s.shard_id FROM durable_cluster.shards s "
		"  JOIN unnest($2::int4[], $3::int8[]) AS u(shard_id, epoch) "
		"    ON s.shard_id = u.shard_id AND s.epoch = u.epoch "
		" WHERE s.node = $1 FOR SHARE OF s",
		3, {TEXTOID, INT4ARRAYOID, INT8ARRAYOID}
	},
	[PLAN_LOAD] = {
		"SELECT state, revision FROM durable_cluster.entity_state "
		" WHERE mall_id = $1 AND user_id = $2",
		2, {TEXTOID, TEXTOID}
	},
	[PLAN_UPDATE] = {
		"UPDATE durable_cluster.entity_state e "
		"   SET state = u.state, revision = u.revision, updated_at = clock_timestamp() "
		"  FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int8[], $5::int8[]) "
		"       AS u(mall_id, user_id, state, revision, old_revision) "
		" WHERE e.mall_id = u.mall_id AND e.user_id = u.user_id "
		"   AND e.revision = u.old_revision",
		5, {TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, INT8ARRAYOID, INT8ARRAYOID}
	},
	[PLAN_INSERT] = {
		"INSERT INTO durable_cluster.entity_state "
		"       (mall_id, user_id, shard_id, state, revision, updated_at) "
		"SELECT mall_id, user_id, shard_id, state, revision, clock_timestamp() "
		"  FROM unnest($1::text[], $2::text[], $3::int4[], $4::jsonb[], $5::int8[]) "
		"       AS u(mall_id, user_id, shard_id, state, revision)",
		5, {TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, JSONBARRAYOID, INT8ARRAYOID}
	},
};

static SPIPlanPtr plans[NUM_PLANS];

Oid
dc_store_extension_oid(void)
{
	return get_extension_oid("durable_cluster", true);
}

/* Drop kept plans: the tables they name were dropped with the extension. */
void
dc_store_forget_plans(void)
{
	for (int i = 0; i < NUM_PLANS; i++)
	{
		if (plans[i])
			SPI_freeplan(plans[i]);
		plans[i] = NULL;
	}
}

static int
run(StorePlan which, Datum *values)
{
	int			rc;

	if (plans[which] == NULL)
	{
		const PlanSpec *spec = &plan_specs[which];
		SPIPlanPtr	plan = SPI_prepare(spec->sql, spec->nargs, (Oid *) spec->argtypes);

		if (plan == NULL)
			elog(ERROR, "durable_cluster: could not prepare \"%s\": %s",
				 spec->sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		plans[which] = plan;
	}
	rc = SPI_execute_plan(plans[which], values, NULL, false, 0);
	if (rc < 0)
		elog(ERROR, "durable_cluster: \"%s\" failed: %s",
			 plan_specs[which].sql, SPI_result_code_string(rc));
	return rc;
}

static Datum
get_column(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

int64
dc_store_join(const char *name, int node_index, const char *address, const char *roles)
{
	Datum		args[5];
	bool		isnull;

	args[0] = CStringGetTextDatum(name);
	args[1] = Int32GetDatum(node_index);
	args[2] = CStringGetTextDatum(address);
	args[3] = Int32GetDatum(MyProcPid);
	args[4] = CStringGetTextDatum(roles);
	run(PLAN_JOIN, args);
	return DatumGetInt64(get_column(0, 1, &isnull));
}

/* false when this incarnation is no longer an up member */
bool
dc_store_heartbeat(const char *name, int64 incarnation)
{
	Datum		args[2];

	args[0] = CStringGetTextDatum(name);
	args[1] = Int64GetDatum(incarnation);
	run(PLAN_HEARTBEAT, args);
	return SPI_processed == 1;
}

void
dc_store_leaving(const char *name, int64 incarnation)
{
	Datum		args[2];

	args[0] = CStringGetTextDatum(name);
	args[1] = Int64GetDatum(incarnation);
	run(PLAN_LEAVING, args);
}

void
dc_store_leave(const char *name, int64 incarnation)
{
	Datum		args[3];

	args[0] = CStringGetTextDatum(name);
	args[1] = Int64GetDatum(incarnation);
	args[2] = Int32GetDatum(dc_failure_timeout_ms);
	run(PLAN_LEAVE, args);
}

void
dc_store_reconcile(void)
{
	Datum		args[1];

	args[0] = Int32GetDatum(dc_failure_timeout_ms);
	run(PLAN_RECONCILE, args);
}

/*
 * Copy the shard map into shared memory if the table holds a newer one than
 * shared memory does.  Returns true if shared memory changed.
 */
bool
dc_store_refresh_map(void)
{
	Oid			ext = dc_store_extension_oid();
	int64		version;
	int			nshards;
	int16	   *owner;
	int64	   *epoch;
	bool		isnull;
	bool		changed = false;

	run(PLAN_MAP_VERSION, NULL);
	version = DatumGetInt64(get_column(0, 1, &isnull));

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	if (dc_shared->map_extension == ext && dc_shared->map_version >= version)
	{
		LWLockRelease(dc_shared->map_lock);
		return false;
	}
	LWLockRelease(dc_shared->map_lock);

	run(PLAN_MAP, NULL);
	if (SPI_processed == 0)
		return false;
	version = DatumGetInt64(get_column(0, 1, &isnull));
	nshards = DatumGetInt32(get_column(0, 2, &isnull));
	owner = palloc(sizeof(int16) * nshards);
	epoch = palloc(sizeof(int64) * nshards);
	for (int i = 0; i < nshards; i++)
		owner[i] = -1;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		int			shard = DatumGetInt32(get_column(r, 3, &isnull));
		Datum		node = get_column(r, 4, &isnull);

		if (shard < 0 || shard >= nshards)
			continue;
		owner[shard] = isnull ? -1 : DatumGetInt32(node);
		epoch[shard] = DatumGetInt64(get_column(r, 5, &isnull));
	}

	LWLockAcquire(dc_shared->map_lock, LW_EXCLUSIVE);
	if (dc_shared->map_extension != ext || dc_shared->map_version < version)
	{
		dc_shared->map_extension = ext;
		dc_shared->map_version = version;
		dc_shared->number_of_shards = nshards;
		memcpy(dc_shared->owner, owner, sizeof(int16) * nshards);
		memcpy(dc_shared->epoch, epoch, sizeof(int64) * nshards);
		changed = true;
	}
	LWLockRelease(dc_shared->map_lock);

	pfree(owner);
	pfree(epoch);
	return changed;
}

/*
 * Lock the given shards' rows and report which ones this node still owns at
 * the given epochs.  The locks are held until the batch commits.
 */
void
dc_store_fence(const char *name, int nshards, const int *shards,
			   const int64 *epochs, bool *owned)
{
	Datum	   *sd = palloc(sizeof(Datum) * nshards);
	Datum	   *ed = palloc(sizeof(Datum) * nshards);
	Datum		args[3];

	for (int i = 0; i < nshards; i++)
	{
		sd[i] = Int32GetDatum(shards[i]);
		ed[i] = Int64GetDatum(epochs[i]);
		owned[i] = false;
	}
	args[0] = CStringGetTextDatum(name);
	args[1] = PointerGetDatum(construct_array(sd, nshards, INT4OID, 4, true, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(ed, nshards, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	run(PLAN_FENCE, args);

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			shard = DatumGetInt32(get_column(r, 1, &isnull));

		for (int i = 0; i < nshards; i++)
			if (shards[i] == shard)
				owned[i] = true;
	}
}

/*
 * Load an entity's committed state; false (and the initial state) if none.
 * Each statement takes a fresh snapshot, so this sees every batch that
 * committed before the fence lock was granted.
 */
bool
dc_store_load_entity(const char *mall_id, const char *user_id, DcEntityState *state)
{
	Datum		args[2];
	bool		isnull;
	Jsonb	   *doc;
	int64		revision;

	args[0] = CStringGetTextDatum(mall_id);
	args[1] = CStringGetTextDatum(user_id);
	run(PLAN_LOAD, args);
	if (SPI_processed == 0)
	{
		dc_entity_init(state);
		return false;
	}
	doc = DatumGetJsonbP(get_column(0, 1, &isnull));
	revision = DatumGetInt64(get_column(0, 2, &isnull));
	dc_entity_from_jsonb(doc, revision, state);
	return true;
}

static ArrayType *
text_array(Datum *d, int n)
{
	return construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT);
}

static ArrayType *
jsonb_array(Datum *d, int n)
{
	return construct_array(d, n, JSONBOID, -1, false, TYPALIGN_INT);
}

static ArrayType *
int8_array(Datum *d, int n)
{
	return construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/*
 * Store the final state of every entity a batch changed: one UPDATE for the
 * entities already stored, guarded by the revision they replace, and one
 * INSERT for new ones.  Anything unexpected (a guard that does not match, a
 * duplicate key) means another writer touched the entity, and the whole
 * batch fails rather than overwrite it.
 */
void
dc_store_write_batch(const DcEntityWrite *writes, int n)
{
	Datum	   *mall = palloc(sizeof(Datum) * n);
	Datum	   *user = palloc(sizeof(Datum) * n);
	Datum	   *shard = palloc(sizeof(Datum) * n);
	Datum	   *doc = palloc(sizeof(Datum) * n);
	Datum	   *rev = palloc(sizeof(Datum) * n);
	Datum	   *old = palloc(sizeof(Datum) * n);
	Datum		args[5];

	for (int pass = 0; pass < 2; pass++)
	{
		bool		updating = (pass == 0);
		int			m = 0;

		for (int i = 0; i < n; i++)
		{
			const DcEntityWrite *w = &writes[i];

			if ((w->old_revision > 0) != updating)
				continue;
			mall[m] = CStringGetTextDatum(w->mall_id);
			user[m] = CStringGetTextDatum(w->user_id);
			shard[m] = Int32GetDatum(w->shard);
			doc[m] = JsonbPGetDatum(w->state_doc);
			rev[m] = Int64GetDatum(w->revision);
			old[m] = Int64GetDatum(w->old_revision);
			m++;
		}
		if (m == 0)
			continue;

		args[0] = PointerGetDatum(text_array(mall, m));
		args[1] = PointerGetDatum(text_array(user, m));
		if (updating)
		{
			args[2] = PointerGetDatum(jsonb_array(doc, m));
			args[3] = PointerGetDatum(int8_array(rev, m));
			args[4] = PointerGetDatum(int8_array(old, m));
			run(PLAN_UPDATE, args);
			if (SPI_processed != (uint64) m)
				ereport(ERROR,
						errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						errmsg("durable_cluster: stored state changed under the owning node"),
						errdetail("%d of %d entity rows matched the revision the node holds.",
								  (int) SPI_processed, m));
		}
		else
		{
			args[2] = PointerGetDatum(construct_array(shard, m, INT4OID, 4, true,
													  TYPALIGN_INT));
			args[3] = PointerGetDatum(jsonb_array(doc, m));
			args[4] = PointerGetDatum(int8_array(rev, m));
			run(PLAN_INSERT, args);
		}
	}
}
