/*-------------------------------------------------------------------------
 *
 * saga.h
 *	  Transfers between two entities (saga.c): what a node records of a
 *	  transfer's step, and the saga worker.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_SAGA_H
#define DC_SAGA_H

#include "entity.h"

/*
 * The step a saga's row records after a step command of the given kind
 * was applied or rejected; NULL when it records nothing.
 */
extern const char *dc_saga_step(DcCommandKind kind, bool applied);

extern void dc_saga_step_parse(const char *name, Jsonb *payload, Jsonb *record,
							   const char *mall_id, const char *user_id, DcCommand *cmd);

extern PGDLLEXPORT void dc_saga_worker_main(Datum main_arg);

#endif							/* DC_SAGA_H */
