/*-------------------------------------------------------------------------
 *
 * tenant.h
 *	  Roles restricted to some malls (tenant.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_TENANT_H
#define DC_TENANT_H

/*
 * Raise 42501 unless role may send command to the entities of mall_id;
 * role NULL means the current user.
 */
extern void dc_tenant_check(const char *role, const char *mall_id, const char *command);

#endif							/* DC_TENANT_H */
