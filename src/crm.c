/*
 * crm.c: module entry point. Owns _PG_init, settings, crm.preloaded(), and the helper that
 * runs crm's own fixed catalog queries as the owner of those catalogs.
 */
#include "crm.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "parser/parse_expr.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/float.h"
#include "pgtime.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
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
	{
		crm_hooks_init();
		crm_masking_init();
	}

	/* Identity state (act_as) lives in every backend that loads us, preloaded or not. */
	crm_identity_init();

	/* settings (defined before the prefix is reserved); the audit queue and worker when preloaded */
	crm_crypt_init();
	if (!IsBinaryUpgrade)
	{
		crm_auditq_init();
		crm_scheduler_init();
	}

	/*
	 * Nobody may invent crm.* settings: identity and policy never come from a setting, and a
	 * reserved prefix keeps "SET crm.anything" from even looking like it works.
	 */
	MarkGUCPrefixReserved("crm");
}

/*
 * Per-backend caches (who a login is, what a principal may reach) depend on crm's catalogs. Those
 * catalogs announce changes with relcache invalidations (statement triggers calling
 * crm._acl_changed()); role renames come as pg_authid syscache invalidations. One callback drops
 * every cache: in the changing backend at its next command, in every other at its next
 * transaction. The catalogs' OIDs are looked up outside the callback, by crm_watch_catalogs().
 */
static const char *const watched_names[] = {
	"principal", "principal_role", "role", "org_unit", "object", "object_grant", "record_share", "wall",
	"field", "field_access", "data_key", "rule"
};
#define NWATCHED lengthof(watched_names)
static Oid	watched[NWATCHED];
static bool callbacks_registered = false;

static bool reset_at_xact_end = false;

static void
crm_reset_caches(void)
{
	/*
	 * Within this transaction caches may be rebuilt from a snapshot older than the change (e.g.
	 * REPEATABLE READ): rebuild them once more when it ends.
	 */
	if (IsTransactionState())
		reset_at_xact_end = true;
	crm_cache_generation++;
	crm_cache_unwatch_rels();
	crm_identity_reset();
	crm_acl_reset();
	crm_guard_reset();
	crm_crypt_reset();
	crm_audit_rel_reset();
	crm_masking_reset();
	crm_rules_reset();
}

/*
 * A managed table changed (a column added or dropped): drop what is cached about the columns of
 * tables (field levels, encrypted fields, audited fields), however the change was made.
 */
static void
crm_reset_rel_caches(void)
{
	crm_cache_generation++;
	crm_cache_unwatch_rels();
	crm_guard_reset();
	crm_crypt_rel_reset();
	crm_audit_rel_reset();
}

static void
crm_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid))
	{
		crm_reset_caches();
		return;
	}
	for (int i = 0; i < (int) NWATCHED; i++)
		if (watched[i] == relid)
		{
			crm_reset_caches();
			return;
		}
	if (crm_cache_rel_watched(relid))
		crm_reset_rel_caches();
}

static void
crm_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	crm_reset_caches();
}

static void
crm_caches_xact_callback(XactEvent event, void *arg)
{
	if (reset_at_xact_end &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		 event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT))
	{
		reset_at_xact_end = false;
		crm_cache_generation++;
		crm_cache_unwatch_rels();
		crm_identity_reset();
		crm_acl_reset();
		crm_guard_reset();
		crm_crypt_reset();
		crm_audit_rel_reset();
		crm_masking_reset();
		crm_rules_reset();
	}
}

void
crm_watch_catalogs(void)
{
	Oid			nsp = get_namespace_oid("crm", false);

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(crm_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, crm_syscache_callback, (Datum) 0);
		RegisterXactCallback(crm_caches_xact_callback, NULL);
		callbacks_registered = true;
	}
	for (int i = 0; i < (int) NWATCHED; i++)
		watched[i] = get_relname_relid(watched_names[i], nsp);
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

/* >0 while crm runs its own catalog queries (which the masking hooks leave alone) */
int			crm_internal_depth = 0;

/*
 * Pin the parsing environment for code that runs with rights other than the caller's: search_path
 * (e.g. pg_catalog, crm, pg_temp: nothing in a schema the caller controls can be resolved, and
 * pg_temp, named last, is searched after pg_catalog and crm, for relations and types only, never
 * for functions or operators), and the settings that change what a given SQL text means
 * (standard_conforming_strings: '\d' would lose its backslash; DateStyle and IntervalStyle, so that
 * dates and intervals read back as written; transform_null_equals: x = NULL would become x IS NULL;
 * array_nulls; extra_float_digits, so that floats are written back whole; TimeZone: the server's,
 * so that a reader cannot move a day's boundary under a condition), set only when the caller has
 * changed them. Returns the GUC nest level to hand
 * to crm_unpin_search_path(). Like a function's SET clause: an error unwinds it with the
 * (sub)transaction.
 */
static void
pin(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

int
crm_pin_search_path(const char *path)
{
	int			nest = NewGUCNestLevel();

	(void) set_config_option("search_path", path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (!standard_conforming_strings)
		pin("standard_conforming_strings", "on");
	if (DateStyle != USE_ISO_DATES || DateOrder != DATEORDER_MDY)
		pin("datestyle", "ISO, MDY");
	if (IntervalStyle != INTSTYLE_POSTGRES)
		pin("intervalstyle", "postgres");
	if (Transform_null_equals)
		pin("transform_null_equals", "off");
	if (!Array_nulls)
		pin("array_nulls", "on");
	if (extra_float_digits != 1)
		pin("extra_float_digits", "1");
	/* the server's time zone (log_timezone, which only the server's configuration sets) */
	if (session_timezone != log_timezone && log_timezone != NULL)
		pin("timezone", pg_get_timezone_name(log_timezone));
	return nest;
}

void
crm_unpin_search_path(int nest)
{
	if (nest > 0)
		AtEOXact_GUC(true, nest);
}

/*
 * Become another role (crm's catalog owner, a rule's owner, the outer user) in a fixed environment:
 * search_path pinned, and the security context flags given (SECURITY_RESTRICTED_OPERATION keeps
 * the code from creating temporary objects or changing session state). crm_restore_user() undoes
 * both.
 */
void
crm_switch_to_role(CrmUserSwitch *sw, Oid role, int extra_sec)
{
	crm_internal_depth++;
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	SetUserIdAndSecContext(role, sw->save_sec_context | SECURITY_LOCAL_USERID_CHANGE | extra_sec);
	sw->guc_nest = 0;
	PG_TRY();
	{
		sw->guc_nest = crm_pin_search_path(CRM_SAFE_SEARCH_PATH);
	}
	PG_CATCH();
	{
		SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
		crm_internal_depth--;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

void
crm_switch_to_owner(CrmUserSwitch *sw)
{
	crm_switch_to_role(sw, crm_catalog_owner(), SECURITY_RESTRICTED_OPERATION);
}

void
crm_restore_user(CrmUserSwitch *sw)
{
	crm_unpin_search_path(sw->guc_nest);
	sw->guc_nest = 0;
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
	crm_internal_depth--;
}

/*
 * Run one fixed, schema-qualified query as the owner of crm's catalogs and return its first row's
 * first nout columns (by value types only). Returns false when there is no row.
 */
/*
 * A plan kept for this query text (inside an SPI connection): crm's fixed queries that run per row
 * or per call cost more to plan than to run. The plan cache replans them when what they read
 * changes. NULL when the table of kept plans is full: plan it each time then.
 */
SPIPlanPtr
crm_kept_plan(const char *sql, int nargs, Oid *argtypes)
{
	static struct
	{
		char	   *sql;
		SPIPlanPtr	plan;
	}			kept[128];
	static int	nkept = 0;
	SPIPlanPtr	plan;

	for (int i = 0; i < nkept; i++)
		if (strcmp(kept[i].sql, sql) == 0)
			return kept[i].plan;
	if (nkept >= (int) lengthof(kept))
		return NULL;
	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "crm: could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	kept[nkept].sql = MemoryContextStrdup(TopMemoryContext, sql);
	kept[nkept].plan = plan;
	nkept++;
	return plan;
}

bool
crm_query_row_as_owner(const char *sql, int nargs, Oid *argtypes, Datum *values,
					   Datum *out, bool *outnull, int nout)
{
	CrmUserSwitch sw;
	volatile bool found = false;
	volatile bool pushed = false;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		SPIPlanPtr	plan;
		int			rc;

		/*
		 * Callers may run where no snapshot is active (ExecutorEnd while a portal is dropped, after
		 * an invalidation emptied a cache): SPI needs one.
		 */
		if (!ActiveSnapshotSet())
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			pushed = true;
		}
		SPI_connect();
		plan = crm_kept_plan(sql, nargs, argtypes);
		if (plan != NULL)
			rc = SPI_execute_plan(plan, values, NULL, true, 1);
		else
			rc = SPI_execute_with_args(sql, nargs, argtypes, values, NULL, true, 1);
		if (rc == SPI_OK_SELECT && SPI_processed == 1)
		{
			for (int i = 0; i < nout; i++)
			{
				Form_pg_attribute a = TupleDescAttr(SPI_tuptable->tupdesc, i);

				out[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &outnull[i]);
				/* by-reference values must outlive SPI_finish: copy them to the caller's context */
				if (!outnull[i] && !a->attbyval)
					out[i] = SPI_datumTransfer(out[i], false, a->attlen);
			}
			found = true;
		}
		SPI_finish();
		if (pushed)
			PopActiveSnapshot();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	return found;
}
