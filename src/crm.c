/*
 * crm.c: module entry point. Owns _PG_init, settings, crm.preloaded(), and the helper that
 * runs crm's own fixed catalog queries as the owner of those catalogs.
 */
#include "crm.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

PG_MODULE_MAGIC;

bool		crm_is_preloaded = false;
static bool crm_initialized = false;

void		_PG_init(void);

void
_PG_init(void)
{
	if (crm_initialized)
		return;
	crm_initialized = true;

	if (process_shared_preload_libraries_in_progress)
		crm_is_preloaded = true;

	/* hooks only when preloaded, so that every backend has them from its first statement */
	if (crm_is_preloaded && !IsBinaryUpgrade)
		crm_hooks_init();

	/* Identity state (act_as) lives in every backend that loads us, preloaded or not. */
	crm_identity_init();

	/*
	 * Nobody may invent crm.* settings: identity and policy never come from a setting, and a
	 * reserved prefix keeps "SET crm.anything" from even looking like it works.
	 */
	MarkGUCPrefixReserved("crm");
}

/* SQL function: crm.preloaded() returns boolean */
PG_FUNCTION_INFO_V1(crm_preloaded);
Datum
crm_preloaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(crm_is_preloaded);
}

/* SQL function: crm._creating_extension() returns boolean (install-time helper) */
PG_FUNCTION_INFO_V1(crm_creating_extension);
Datum
crm_creating_extension(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(creating_extension);
}

/*
 * The owner of crm.principal, i.e. of crm's catalogs. Lookups that any caller needs (who am
 * I?) run as this role with fixed, schema-qualified SQL, so callers need no grant on the
 * catalogs themselves.
 */
Oid
crm_catalog_owner(void)
{
	Oid			nsp = get_namespace_oid("crm", true);
	Oid			relid;
	HeapTuple	tp;
	Oid			owner;

	if (!OidIsValid(nsp) ||
		!OidIsValid(relid = get_relname_relid("principal", nsp)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("crm is not installed in this database"),
				 errhint("Run CREATE EXTENSION crm CASCADE.")));
	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	return owner;
}

void
crm_switch_to_owner(CrmUserSwitch *sw)
{
	Oid			owner = crm_catalog_owner();

	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	SetUserIdAndSecContext(owner, sw->save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
crm_restore_user(CrmUserSwitch *sw)
{
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
}
