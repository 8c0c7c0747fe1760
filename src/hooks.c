/*
 * hooks.c: crm's executor and utility hooks, installed only when preloaded. Owns the EXPLAIN
 * ANALYZE guard: the row counts of an EXPLAIN ANALYZE ("Rows Removed by Filter") would tell a
 * principal how many records row-level security hid from it, so EXPLAIN ANALYZE of a query that
 * reads a managed table is refused to roles that row security applies to. Plain EXPLAIN works.
 */
#include "crm.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/explain.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "optimizer/planner.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ExecutorFinish_hook_type prev_ExecutorFinish = NULL;
static planner_hook_type prev_planner = NULL;
static int	explain_analyze_depth = 0;

static bool
is_explain_analyze(Node *stmt)
{
	ListCell   *lc;

	if (!IsA(stmt, ExplainStmt))
		return false;
	foreach(lc, ((ExplainStmt *) stmt)->options)
	{
		DefElem    *opt = (DefElem *) lfirst(lc);

		if (strcmp(opt->defname, "analyze") == 0)
			return opt->arg == NULL || defGetBoolean(opt);
	}
	return false;
}

/* whether a database is marked as a template (anyone with CREATEDB may copy it) */
static bool
crm_database_is_template(Oid db)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(db));
	bool		is_template = false;

	if (HeapTupleIsValid(tup))
	{
		is_template = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
		ReleaseSysCache(tup);
	}
	return is_template;
}

/*
 * Statements that need a database without other sessions: crm's audit writer there leaves for
 * them. Only when the statement will really go ahead — the caller passes the checks PostgreSQL
 * makes of it (owns the database or is superuser; CREATEDB to rename it or to copy it, and a
 * template that is one or is the caller's): else any login could keep a database's writer away
 * by repeating a refused DROP DATABASE. Returns the database left (InvalidOid: none).
 */
static Oid
release_audit_writer(Node *stmt)
{
	ListCell   *lc;
	Oid			db = InvalidOid;

	if (IsA(stmt, DropdbStmt))
	{
		db = get_database_oid(((DropdbStmt *) stmt)->dbname, true);
		if (OidIsValid(db) && !pg_database_ownercheck(db, GetUserId()))
			db = InvalidOid;
	}
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
	{
		db = get_database_oid(((RenameStmt *) stmt)->subname, true);
		if (OidIsValid(db) && (!pg_database_ownercheck(db, GetUserId()) || !have_createdb_privilege()))
			db = InvalidOid;
	}
	else if (IsA(stmt, AlterDatabaseStmt))
	{
		/* of its forms, only SET TABLESPACE needs the database to itself */
		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
				db = get_database_oid(((AlterDatabaseStmt *) stmt)->dbname, true);
		if (OidIsValid(db) && !pg_database_ownercheck(db, GetUserId()))
			db = InvalidOid;
	}
	else if (IsA(stmt, CreatedbStmt))
		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *opt = lfirst(lc);

			if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL && IsA(opt->arg, String))
				db = get_database_oid(strVal(opt->arg), true);
		}
	if (OidIsValid(db) && IsA(stmt, CreatedbStmt) &&
		(!have_createdb_privilege() || (!crm_database_is_template(db) && !pg_database_ownercheck(db, GetUserId()))))
		db = InvalidOid;
	if (OidIsValid(db))
		crm_auditq_release_db(db);
	return db;
}

/* crm's checks around one utility statement (crm_ProcessUtility may hand it a copied tree) */
static void
utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
		ProcessUtilityContext context, ParamListInfo params,
		QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	bool		guard = is_explain_analyze(pstmt->utilityStmt);
	CrmCopyFrame *volatile copy;
	volatile Oid released;
	bool		unchecked = crm_restore_copy_unchecked(pstmt->utilityStmt);
	int			save_role = SessionReplicationRole;

	crm_masking_check_utility(pstmt->utilityStmt);
	crm_restore_check_drop(pstmt->utilityStmt);
	crm_audit_check_utility(pstmt->utilityStmt);
	crm_copies_check_utility(pstmt->utilityStmt);
	copy = crm_copies_push(pstmt->utilityStmt, guard);
	released = release_audit_writer(pstmt->utilityStmt);	/* (resumed below, however it ends) */

	if (guard)
		explain_analyze_depth++;
	PG_TRY();
	{
		/* a restore session loading one of crm's catalogs: no FK checks (restore.c) */
		if (unchecked)
			SessionReplicationRole = SESSION_REPLICATION_ROLE_REPLICA;
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (unchecked)
			SessionReplicationRole = save_role;
		if (guard)
			explain_analyze_depth--;
		crm_copies_pop(copy);
		/* done, or failed: the writer comes back (a dropped database's finds it gone) */
		if (OidIsValid(released))
			crm_auditq_resume_db(released);
	}
	PG_END_TRY();

	crm_copies_after_utility(pstmt->utilityStmt, copy);
	crm_audit_after_utility(pstmt->utilityStmt, queryString, context == PROCESS_UTILITY_TOPLEVEL);

	/* SET ROLE / SET SESSION AUTHORIZATION change who is acting */
	if (IsA(pstmt->utilityStmt, VariableSetStmt))
	{
		VariableSetStmt *vs = (VariableSetStmt *) pstmt->utilityStmt;

		if (vs->kind == VAR_RESET_ALL ||
			(vs->name && (strcmp(vs->name, "role") == 0 || strcmp(vs->name, "session_authorization") == 0)))
			crm_masking_actor_changed();
	}
}

static void
crm_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	/* a restore session adding a foreign key to crm's catalogs: see restore.c */
	if (crm_restore_fk_to_catalog(pstmt->utilityStmt))
	{
		if (readOnlyTree)
			pstmt = copyObject(pstmt);
		readOnlyTree = false;
		crm_restore_skip_fk_check(pstmt->utilityStmt);
	}
	utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

static void
crm_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	if (explain_analyze_depth > 0 && !superuser() && !has_bypassrls_privilege(GetUserId()))
	{
		Oid			data_nsp = get_namespace_oid("crm_data", true);
		ListCell   *lc;

		foreach(lc, queryDesc->plannedstmt->rtable)
		{
			RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

			if (rte->rtekind == RTE_RELATION && OidIsValid(data_nsp) &&
				get_rel_namespace(rte->relid) == data_nsp)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("EXPLAIN ANALYZE of a query on %s.%s is not allowed",
								"crm_data", crm_short(get_rel_name(rte->relid))),
						 errdetail("Its row counts would reveal records that row-level security hides."),
						 errhint("Use EXPLAIN without ANALYZE.")));
		}
	}
	crm_copies_executor_start(queryDesc, eflags);
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/* a write's copy frame is in force while it runs (copies.c) */
static void
crm_ExecutorRun(QueryDesc *queryDesc, ScanDirection direction, uint64 count, bool execute_once)
{
	bool		reading;
	CrmCopyFrame *volatile f = crm_copies_enter(queryDesc, true, &reading);
	volatile bool read_now = reading;

	PG_TRY();
	{
		if (prev_ExecutorRun)
			prev_ExecutorRun(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		crm_copies_leave(f, read_now);
	}
	PG_END_TRY();
}

/* ... and while its AFTER triggers run */
static void
crm_ExecutorFinish(QueryDesc *queryDesc)
{
	bool		reading;
	CrmCopyFrame *volatile f = crm_copies_enter(queryDesc, false, &reading);
	volatile bool read_now = reading;

	PG_TRY();
	{
		if (prev_ExecutorFinish)
			prev_ExecutorFinish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		crm_copies_leave(f, read_now);
	}
	PG_END_TRY();
	crm_copies_write_done(queryDesc);
}

/* planning a write folds immutable functions: what they read is checked like the write's reads */
static PlannedStmt *
crm_hooks_planner(Query *parse, const char *query_string, int cursorOptions, ParamListInfo boundParams)
{
	CrmCopyFrame *volatile f = crm_copies_plan_begin(parse);
	PlannedStmt *volatile result = NULL;

	PG_TRY();
	{
		if (prev_planner)
			result = prev_planner(parse, query_string, cursorOptions, boundParams);
		else
			result = standard_planner(parse, query_string, cursorOptions, boundParams);
	}
	PG_CATCH();
	{
		crm_copies_plan_end(f, false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	crm_copies_plan_end(f, true);
	return result;
}

static void
crm_ExecutorEnd(QueryDesc *queryDesc)
{
	crm_copies_executor_end(queryDesc);
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

void
crm_hooks_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = crm_ProcessUtility;
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = crm_ExecutorStart;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = crm_ExecutorEnd;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = crm_ExecutorRun;
	prev_ExecutorFinish = ExecutorFinish_hook;
	ExecutorFinish_hook = crm_ExecutorFinish;
	prev_planner = planner_hook;
	planner_hook = crm_hooks_planner;
	crm_copies_init();
	crm_audit_hooks_init();
}
