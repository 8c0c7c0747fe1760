/*
 * restore.c: what lets every restore path (pg_restore serial, -j N, --single-transaction, a plain
 * SQL dump through psql) load a dump of a database that uses crm.
 *
 * crm's catalogs (crm.principal, crm.field, ...) are extension members whose rows pg_dump keeps
 * (pg_extension_config_dump): CREATE EXTENSION makes them, with their foreign keys, before the
 * dump's rows arrive. A serial restore loads their rows in an order that satisfies those keys; a
 * parallel one (-j) does not: it loads the biggest tables first and does not wait for the rows a
 * catalog refers to, nor for the catalogs that the business tables' foreign keys (crm_fk_owner,
 * crm_fk_org_unit) refer to before adding them. So, in a restore session only (a superuser with
 * row_security = off, which pg_dump's scripts and pg_restore always set):
 *  - COPY into one of crm's catalogs runs with session_replication_role = replica, so their
 *    foreign keys are not checked row by row (as pg_restore --disable-triggers does; crm's own
 *    triggers fire ALWAYS, so they still run);
 *  - a foreign key added to a table that refers to one of crm's catalogs is added without
 *    re-checking the rows already there (as CREATE TABLE adds one).
 * Both trust the dump, which pg_dump took from one consistent snapshot of a database where these
 * keys held. A superuser could do either by hand.
 *
 * The audit log's tables are not extension members: the dump makes them. A parallel restore
 * truncates each table it made before loading it; that is allowed while the table is empty
 * (crm_audit_rel_is_empty), and refused as before once it holds anything.
 */
#include "crm.h"

#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "commands/extension.h"
#include "commands/event_trigger.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/bufmgr.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "access/xact.h"
#include "lib/stringinfo.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"

/*
 * A superuser's session with row security off: what pg_restore and pg_dump's scripts run as. The
 * session's login must be a superuser too: a SECURITY DEFINER function owned by one is not a
 * restore.
 */
static bool
restore_session(void)
{
	return !row_security && superuser() && superuser_arg(GetSessionUserId());
}

/* Is relid one of the crm extension's own tables (a catalog whose rows pg_dump keeps)? */
static bool
is_crm_catalog(Oid relid)
{
	Oid			ext = get_extension_oid("crm", true);

	return OidIsValid(relid) && OidIsValid(ext) && get_rel_relkind(relid) == RELKIND_RELATION &&
		getExtensionOfObject(RelationRelationId, relid) == ext;
}

/*
 * An audit table that holds nothing, taking the lock TRUNCATE would take first (so no writer can
 * add an entry between this check and the TRUNCATE): the table and, for the partitioned log,
 * every partition have no pages at all. A parallel restore truncates the tables it has just made.
 */
bool
crm_audit_rel_is_empty(Oid relid)
{
	List	   *rels;
	ListCell   *lc;

	/* no lock for who may not truncate it anyway (it would hold up every writer while it waits) */
	if (pg_class_aclcheck(relid, GetUserId(), ACL_TRUNCATE) != ACLCHECK_OK)
		return false;
	/* the table first, then its partitions: the order TRUNCATE locks them in */
	LockRelationOid(relid, AccessExclusiveLock);
	rels = find_all_inheritors(relid, AccessExclusiveLock, NULL);

	foreach(lc, rels)
	{
		Oid			r = lfirst_oid(lc);
		Relation	rel;
		bool		empty;

		if (!RELKIND_HAS_STORAGE(get_rel_relkind(r)))
			continue;
		rel = table_open(r, AccessExclusiveLock);
		empty = RelationGetNumberOfBlocks(rel) == 0;
		table_close(rel, NoLock);
		if (!empty)
			return false;
	}
	return true;
}

/*
 * Is the restored log all there? A parallel restore may add the log's append-only trigger (which
 * says the log is ready) before every partition's rows are in: the log's own indexes
 * (audit_log_xid, audit_log_record: indexes of the partitioned parent) become valid only when the
 * last partition's index, built after that partition's rows, is attached. (The audit writer also
 * waits for the id sequence to be set, auditwriter.c's probe; sessions do not, as a reset sequence
 * would then stop them writing their entries.)
 */
bool
crm_audit_log_loaded(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;

	table_close(rel, AccessShareLock);
	foreach(lc, indexes)
	{
		Oid			idx = lfirst_oid(lc);
		char	   *name = get_rel_name(idx);

		if (name != NULL && (strcmp(name, "audit_log_xid") == 0 || strcmp(name, "audit_log_record") == 0) &&
			!get_index_isvalid(idx))
			return false;
	}
	return true;
}

/* COPY ... FROM into one of crm's catalogs, in a restore session: run it without FK checks */
bool
crm_restore_copy_unchecked(Node *stmt)
{
	CopyStmt   *c;

	if (!IsA(stmt, CopyStmt))
		return false;
	c = (CopyStmt *) stmt;
	return c->is_from && c->relation != NULL && restore_session() &&
		is_crm_catalog(RangeVarGetRelid(c->relation, NoLock, true));
}

/* Does this ALTER TABLE add a foreign key to one of crm's catalogs? (restore sessions only) */
bool
crm_restore_fk_to_catalog(Node *stmt)
{
	ListCell   *lc;

	if (!IsA(stmt, AlterTableStmt) || !restore_session())
		return false;
	foreach(lc, ((AlterTableStmt *) stmt)->cmds)
	{
		AlterTableCmd *cmd = (AlterTableCmd *) lfirst(lc);
		Constraint *con = (Constraint *) cmd->def;

		if (cmd->subtype == AT_AddConstraint && con != NULL && IsA(con, Constraint) &&
			con->contype == CONSTR_FOREIGN && con->initially_valid && con->pktable != NULL &&
			is_crm_catalog(RangeVarGetRelid(con->pktable, NoLock, true)))
			return true;
	}
	return false;
}

/* ... and mark those foreign keys as added without re-checking the rows (a copied tree) */
void
crm_restore_skip_fk_check(Node *stmt)
{
	ListCell   *lc;

	foreach(lc, ((AlterTableStmt *) stmt)->cmds)
	{
		AlterTableCmd *cmd = (AlterTableCmd *) lfirst(lc);
		Constraint *con = (Constraint *) cmd->def;

		if (cmd->subtype == AT_AddConstraint && con != NULL && IsA(con, Constraint) &&
			con->contype == CONSTR_FOREIGN && con->initially_valid && con->pktable != NULL &&
			is_crm_catalog(RangeVarGetRelid(con->pktable, NoLock, true)))
			con->skip_validation = true;
	}
}

/*
 * DROP EXTENSION crm (with CASCADE: also DROP EXTENSION of one crm requires) while business tables
 * exist would leave their rows without crm's policies, masks, audit triggers and checks. It is
 * refused unless crm.uninstall(reason), called by a superuser earlier in the same transaction,
 * recorded the decision in the audit log (a MAINTENANCE event, which stays: the log is not an
 * extension member).
 */
static LocalTransactionId uninstall_armed = InvalidLocalTransactionId;
static SubTransactionId uninstall_subid = InvalidSubTransactionId;

/* a rolled-back savepoint takes the audit event with it, and so the permission it gave */
static void
uninstall_subxact(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && uninstall_armed != InvalidLocalTransactionId && uninstall_subid >= mySubid)
		uninstall_armed = InvalidLocalTransactionId;
}

PG_FUNCTION_INFO_V1(crm_uninstall);
Datum
crm_uninstall(PG_FUNCTION_ARGS)
{
	text	   *reason_t = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	char	   *reason = reason_t ? text_to_cstring(reason_t) : NULL;
	StringInfoData d;

	if (!superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("permission denied for crm.uninstall"),
						errhint("Only a superuser may uninstall crm.")));
	if (reason == NULL || strspn(reason, " \t\r\n") == strlen(reason))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("crm.uninstall needs a reason"),
						errhint("The reason is recorded in the audit log.")));
	if (!IsTransactionBlock())
		ereport(ERROR, (errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
						errmsg("crm.uninstall must be called in a transaction block"),
						errhint("BEGIN; SELECT crm.uninstall('why'); DROP EXTENSION crm CASCADE; COMMIT;")));
	initStringInfo(&d);
	appendStringInfoString(&d, "{\"operation\": \"uninstall\", \"reason\": ");
	escape_json(&d, crm_shortn(reason, 200));
	appendStringInfoChar(&d, '}');
	crm_audit_event("MAINTENANCE", NULL, 0, d.data);
	if (uninstall_subid == InvalidSubTransactionId)
		RegisterSubXactCallback(uninstall_subxact, NULL);
	uninstall_subid = GetCurrentSubTransactionId();
	uninstall_armed = MyProc->lxid;
	PG_RETURN_TEXT_P(cstring_to_text("DROP EXTENSION crm CASCADE may now run in this transaction"));
}

/* the names of the tables in crm_data (up to 5), or NULL when there are none */
static char *
business_tables(int64 *count)
{
	Oid			nsp = get_namespace_oid("crm_data", true);
	Oid			types[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(nsp)};
	Datum		out[2];
	bool		nulls[2];

	*count = 0;
	if (!OidIsValid(nsp) ||
		!crm_query_row_as_owner("SELECT pg_catalog.count(*), pg_catalog.string_agg(n, ', ') FILTER (WHERE r OPERATOR(pg_catalog.<=) 5)"
								" FROM (SELECT c.relname::text, pg_catalog.row_number() OVER (ORDER BY c.relname)"
								" FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) $1"
								" AND c.relkind OPERATOR(pg_catalog.=) 'r') t(n, r)", 1, types, args, out, nulls, 2) ||
		nulls[0] || DatumGetInt64(out[0]) == 0)
		return NULL;
	*count = DatumGetInt64(out[0]);
	return TextDatumGetCString(out[1]);
}

/* Does this DROP EXTENSION take crm with it? */
static bool
drops_crm(DropStmt *d)
{
	Oid			crm = get_extension_oid("crm", true);
	ListCell   *lc;

	if (!OidIsValid(crm))
		return false;
	foreach(lc, d->objects)
	{
		Oid			ext = get_extension_oid(strVal(lfirst(lc)), true);
		Oid			types[2] = {OIDOID, OIDOID};
		Datum		args[2] = {ObjectIdGetDatum(crm), ObjectIdGetDatum(ext)};
		Datum		out[1];
		bool		nulls[1];

		if (ext == crm)
			return true;
		if (OidIsValid(ext) && d->behavior == DROP_CASCADE &&
			crm_query_row_as_owner("SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
								   " AND d.objid OPERATOR(pg_catalog.=) $1 AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
								   " AND d.refobjid OPERATOR(pg_catalog.=) $2", 2, types, args, out, nulls, 1))
			return true;
	}
	return false;
}

void
crm_restore_check_drop(Node *stmt)
{
	int64		n;
	char	   *names;

	if (!IsA(stmt, DropStmt) || ((DropStmt *) stmt)->removeType != OBJECT_EXTENSION ||
		!IsTransactionState() || !drops_crm((DropStmt *) stmt))
		return;
	if (uninstall_armed != InvalidLocalTransactionId && uninstall_armed == MyProc->lxid)
		return;
	names = business_tables(&n);
	if (names == NULL)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
			 errmsg("cannot drop extension crm while schema crm_data holds %lld business tables (%s%s)",
					(long long) n, names, n > 5 ? ", ..." : ""),
			 errdetail("Their rows would stay without crm's row-level security policies, field masks, audit triggers and checks."),
			 errhint("To keep the data protected, restore or repair instead (see docs/backups.md). To uninstall anyway, in one transaction: "
					 "BEGIN; SELECT crm.uninstall('reason'); DROP EXTENSION crm CASCADE; COMMIT;")));
}

/*
 * The same check from an event trigger (crm_drop_guard, ddl_command_start, ENABLE ALWAYS), so that
 * it holds when crm is not preloaded (no utility hook) too.
 */
PG_FUNCTION_INFO_V1(crm_drop_guard);
Datum
crm_drop_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("crm._drop_guard() must be called as an event trigger")));
	trigdata = (EventTriggerData *) fcinfo->context;
	if (trigdata->parsetree != NULL)
		crm_restore_check_drop(trigdata->parsetree);
	PG_RETURN_NULL();
}
