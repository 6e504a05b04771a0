/*-------------------------------------------------------------------------
 *
 * pg_compat.h
 *	  What differs between the PostgreSQL majors durable_cluster builds
 *	  against (15, 17 and 18), in one place, so that the sources call one
 *	  name whatever the version.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_PG_COMPAT_H
#define DC_PG_COMPAT_H

#include "access/genam.h"
#include "catalog/pg_proc.h"
#include "executor/executor.h"
#include "nodes/pg_list.h"
#include "storage/proc.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/memutils.h"
#include "utils/relcache.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
#endif

/*
 * 18 marks functions that do not return with pg_noreturn before the
 * declaration, where pg_attribute_noreturn() went after it; the
 * attribute it stood for is taken before it as well.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/* 16 folded the per-kind ACL checks into object_aclcheck() */
#if PG_VERSION_NUM >= 160000
#define dc_proc_aclcheck(proc, role, mode) \
	object_aclcheck(ProcedureRelationId, (proc), (role), (mode))
#else
#define dc_proc_aclcheck(proc, role, mode) pg_proc_aclcheck((proc), (role), (mode))
#endif

/*
 * 17 ties a wait event set to a resource owner instead of a memory
 * context; one that lives as long as the process has neither.
 */
#if PG_VERSION_NUM >= 170000
#define dc_create_wait_event_set(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define dc_create_wait_event_set(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/* 17 moved this backend's local transaction id into its virtual one */
#if PG_VERSION_NUM >= 170000
#define dc_local_transaction_id() (MyProc->vxid.lxid)
#else
#define dc_local_transaction_id() (MyProc->lxid)
#endif

/* 16 gave EvalPlanQualInit() the result relations */
#if PG_VERSION_NUM >= 160000
#define dc_epq_init(epq, estate) EvalPlanQualInit((epq), (estate), NULL, NIL, -1, NIL)
#else
#define dc_epq_init(epq, estate) EvalPlanQualInit((epq), (estate), NULL, NIL, -1)
#endif

/* 18: whether a deferrable primary key will do, and scan instrumentation */
#if PG_VERSION_NUM >= 180000
#define dc_primary_key_index(rel) RelationGetPrimaryKeyIndex((rel), false)
#define dc_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define dc_primary_key_index(rel) RelationGetPrimaryKeyIndex(rel)
#define dc_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

/*
 * An executor state's range table of relation entries.  16 moved their
 * permissions to RTEPermissionInfos (ExecGetUpdatedCols reads them); 18
 * added the set of relations left after pruning: all of them here.
 */
static inline void
dc_init_range_table(EState *estate, List *rtable)
{
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;
	ListCell   *lc;

	foreach(lc, rtable)
		(void) addRTEPermissionInfo(&perminfos, lfirst_node(RangeTblEntry, lc));
#endif
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, rtable, perminfos,
					   bms_add_range(NULL, 1, list_length(rtable)));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, rtable, perminfos);
#else
	ExecInitRangeTable(estate, rtable);
#endif
}

#endif							/* DC_PG_COMPAT_H */
