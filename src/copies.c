/*
 * copies.c: no silent copies of protected data, and no way around the row security crm builds.
 *
 * crm's row security and masking follow the acting principal, so whoever reads a view over
 * crm_data sees only what it may see. What escapes them is data materialized under one identity
 * and read under another:
 *   - CREATE TABLE AS / SELECT INTO / CREATE MATERIALIZED VIEW / REFRESH MATERIALIZED VIEW that
 *     read a crm_data table (directly, through views, through functions, through EXECUTE of a
 *     prepared statement) are refused to everyone but the maintenance role: a superuser or
 *     BYPASSRLS role acting as no principal, the identity crm's masking and stamps already treat as
 *     maintenance. TEMPORARY copies stay allowed and are audited as EXPORT; copies the maintenance
 *     role makes are EXPORT events too, and are recorded in crm.data_copy for the compliance report.
 *     The statement is checked before it runs (the query tree, views expanded), and every query
 *     the executor starts while it fills the relation is checked again: a function's body is not
 *     in the query tree, but its queries start executors like any other.
 *   - a view over crm_data owned by a role that bypasses row security (a superuser) would show
 *     every record to every reader: reading crm_data through one is refused to principals.
 *   - CREATE/ALTER/DROP POLICY (and renaming one) on managed tables is refused except inside
 *     crm._apply_policies(), which builds crm's own policies from its catalogs (and pg_restore
 *     recreating a missing crm policy).
 *   - CREATE RULE on a relation that reads or writes crm_data (or by its own actions would) is
 *     refused: a rule runs with its owner's rights and can capture what others write through it.
 *   - a write into a relation outside crm and crm_data (INSERT, UPDATE, DELETE, MERGE, a
 *     data-modifying WITH, COPY FROM, ALTER TABLE evaluating defaults) is a copy too: refused if it
 *     reads crm_data, checked like the above while it is planned (folded IMMUTABLE functions), run
 *     and finished (triggers); into a temporary table it is allowed, an EXPORT, and makes the table
 *     a copy. While a copy is being made, a cursor over crm_data fetched inside it (FETCH starts no
 *     executor) is checked at ExecutorRun, and a cursor keeping rows of crm_data outside an executor
 *     (WITH HOLD, RETURNING) refuses it while open.
 * Not covered: values read by one statement and written by a later one (a client, PL/pgSQL
 * variables, a FOR loop's body, a rule's call action given a record id): the principal writing down
 * what it may see, as any client can, not a copy made in one statement or refreshed anew.
 */
#include "crm.h"

#include "access/parallel.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/policy.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "rewrite/prs2lock.h"
#include "tcop/cmdtag.h"
#include "tcop/dest.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "tcop/pquery.h"
#include "utils/portal.h"
#include "parser/parsetree.h"
#include "utils/rel.h"

/* A relation being filled by CREATE TABLE AS / SELECT INTO / a materialized view. */
typedef struct CrmCopyFrame
{
	const char *what;			/* the statement, for messages and events */
	char	   *target;			/* the relation being filled (qualified when known) */
	RangeVar   *rv;				/* its name, to find it afterwards */
	Oid			relid;			/* or its OID (a write: INSERT, UPDATE, DELETE, MERGE) */
	QueryDesc  *qd;				/* the write's own query */
	bool		temp;
	bool		allowed;		/* temporary, or made by the maintenance role */
	bool		read_data;		/* a crm_data table was read while filling it */
	List	   *sources;		/* OIDs of the crm_data tables read */
	uint64		rows;
	struct CrmCopyFrame *prev;
} CrmCopyFrame;

static CrmCopyFrame *copy_top = NULL;
static List *temp_copies = NIL;	/* this session's temporary copies of crm_data (TopMemoryContext) */
static Oid	policy_gate = InvalidOid;	/* the managed table crm._apply_policies() is rebuilding */
static List *write_frames = NIL;	/* frames of writes started and not yet ended (TopMemoryContext) */
static List *data_portals = NIL;	/* cursors that read crm_data and keep rows outside an executor */

static CrmCopyFrame *push_fill(Node *stmt);
static void check_data_portals(CrmCopyFrame *f);
static void note_data_portal(QueryDesc *qd);
static void start_write(QueryDesc *qd);
static void forget_write(QueryDesc *qd);
static bool ri_query(void);

static Oid
data_nsp(void)
{
	return get_namespace_oid("crm_data", true);
}

static bool
crm_ready(void)
{
	Oid			nsp = get_namespace_oid("crm", true);

	return IsTransactionState() && OidIsValid(data_nsp()) && OidIsValid(nsp) &&
		OidIsValid(get_relname_relid("principal", nsp));
}

/* crm's maintenance role: a superuser or BYPASSRLS role acting as no principal */
static bool
is_maintenance(void)
{
	bool		found;

	(void) crm_current_principal(&found);
	return !found && (superuser() || has_bypassrls_privilege(GetUserId()));
}

static bool
is_managed(Oid relid)
{
	return OidIsValid(relid) && get_rel_namespace(relid) == data_nsp() && get_rel_relkind(relid) == RELKIND_RELATION;
}

static char *
qualified(Oid relid)
{
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));

	return quote_qualified_identifier(nsp, get_rel_name(relid));
}

/* --- does a query or relation reach crm_data? ------------------------------------------------------- */

typedef struct ReachCtx
{
	Oid			nsp;
	bool		select_only;	/* follow only views' SELECT rules (what reading a relation runs) */
	List	   *visiting;		/* relations whose rules are being walked (a rule names its own relation) */
	Oid			found;			/* the crm_data table reached */
} ReachCtx;

static bool rel_reaches(Oid relid, ReachCtx *cx);

static bool
reach_walker(Node *node, ReachCtx *cx)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		return rte->rtekind == RTE_RELATION && rel_reaches(rte->relid, cx);
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, reach_walker, (void *) cx, QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, reach_walker, (void *) cx);
}

/* A copy of crm_data: this session's temporary copy, or one the maintenance role made. */
static bool
is_copy(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		vals[1] = {ObjectIdGetDatum(relid)};
	Datum		out[1];
	bool		outnull[1];

	if (get_rel_relkind(relid) != RELKIND_RELATION)
		return false;
	if (get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
		return list_member_oid(temp_copies, relid);
	return crm_query_row_as_owner("SELECT 1 FROM crm.data_copy d WHERE d.relation::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
								  1, types, vals, out, outnull, 1);
}

/*
 * A crm_data table or a copy of one, or a relation whose rules (a view's definition, a rule's
 * actions) reach one.
 */
static bool
rel_reaches(Oid relid, ReachCtx *cx)
{
	Relation	rel;
	bool		hit = false;

	if (get_rel_namespace(relid) == cx->nsp || is_copy(relid))
	{
		cx->found = relid;
		return true;
	}
	if ((cx->select_only && get_rel_relkind(relid) != RELKIND_VIEW && get_rel_relkind(relid) != RELKIND_MATVIEW) ||
		list_member_oid(cx->visiting, relid))
		return false;
	check_stack_depth();
	cx->visiting = lappend_oid(cx->visiting, relid);
	rel = relation_open(relid, AccessShareLock);
	for (int i = 0; rel->rd_rules != NULL && i < rel->rd_rules->numLocks && !hit; i++)
	{
		RewriteRule *r = rel->rd_rules->rules[i];

		if (cx->select_only && r->event != CMD_SELECT)
			continue;
		hit = reach_walker(r->qual, cx) || reach_walker((Node *) r->actions, cx);
	}
	relation_close(rel, AccessShareLock);
	cx->visiting = list_delete_last(cx->visiting);
	return hit;
}

/* --- refusals --------------------------------------------------------------------------------------- */

static void
refuse_copy(CrmCopyFrame *f, Oid source)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s %s reading %s is not allowed", f->what, f->target, qualified(source)),
			 errdetail("A copy keeps the records and values its maker may see and shows them to whoever may read it: crm's row security and masking do not follow it. Only the maintenance role (a superuser acting as no principal) may make one."),
			 errhint("Create a view instead: row security and masking follow whoever reads a view. A TEMPORARY table is allowed (audited as EXPORT).")));
}

static void
refuse_ddl(const char *what, const char *name, Oid relid, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s %s on %s is not allowed", what, quote_identifier(name), qualified(relid)),
			 errdetail("%s", detail),
			 errhint("%s", hint)));
}

/* --- CREATE TABLE AS, SELECT INTO, materialized views ----------------------------------------------- */

/*
 * Called by the utility hook before a statement runs: a frame for a statement that fills a relation
 * from a query (NULL for any other), after refusing one whose query tree reaches crm_data.
 */
CrmCopyFrame *
crm_copies_push(Node *stmt, bool explain_analyze)
{
	CrmCopyFrame *f;

	/* EXPLAIN ANALYZE CREATE TABLE AS makes the table too */
	if (explain_analyze && IsA(((ExplainStmt *) stmt)->query, Query) &&
		((Query *) ((ExplainStmt *) stmt)->query)->commandType == CMD_UTILITY)
		stmt = ((Query *) ((ExplainStmt *) stmt)->query)->utilityStmt;
	if (creating_extension || !(IsA(stmt, CreateTableAsStmt) || IsA(stmt, RefreshMatViewStmt) ||
								IsA(stmt, CopyStmt) || IsA(stmt, AlterTableStmt)) || !crm_ready())
		return NULL;
	/* COPY FROM and ALTER TABLE evaluate defaults and USING expressions into the relation */
	if (IsA(stmt, CopyStmt) || IsA(stmt, AlterTableStmt))
		return push_fill(stmt);
	f = palloc0(sizeof(CrmCopyFrame));
	if (IsA(stmt, CreateTableAsStmt))
	{
		CreateTableAsStmt *c = (CreateTableAsStmt *) stmt;
		RangeVar   *rv = c->into->rel;

		f->rv = rv;
		f->temp = rv->relpersistence == RELPERSISTENCE_TEMP ||
			(rv->schemaname != NULL && strncmp(rv->schemaname, "pg_temp", 7) == 0);	/* pg_temp, pg_temp_N */
		f->what = c->objtype == OBJECT_MATVIEW ? "CREATE MATERIALIZED VIEW" :
			c->is_select_into ? (f->temp ? "SELECT INTO TEMPORARY" : "SELECT INTO") :
			(f->temp ? "CREATE TEMPORARY TABLE AS" : "CREATE TABLE AS");
		f->target = rv->schemaname ? quote_qualified_identifier(rv->schemaname, rv->relname)
			: pstrdup(quote_identifier(rv->relname));
	}
	else
	{
		RefreshMatViewStmt *r = (RefreshMatViewStmt *) stmt;
		Oid			relid = RangeVarGetRelid(r->relation, NoLock, true);

		f->rv = r->relation;
		f->what = "REFRESH MATERIALIZED VIEW";
		f->target = OidIsValid(relid) ? qualified(relid) : pstrdup(quote_identifier(r->relation->relname));
	}
	f->allowed = f->temp || is_maintenance();
	check_data_portals(f);
	/* the query tree, views expanded: catches WITH NO DATA too (its REFRESH would copy) */
	if (!f->allowed && IsA(stmt, CreateTableAsStmt) && IsA(((CreateTableAsStmt *) stmt)->query, Query))
	{
		ReachCtx	cx = {data_nsp(), true, NIL, InvalidOid};

		if (reach_walker(((CreateTableAsStmt *) stmt)->query, &cx))
			refuse_copy(f, cx.found);
	}
	f->prev = copy_top;
	copy_top = f;
	return f;
}

/* ... and after it ran or failed */
void
crm_copies_pop(CrmCopyFrame *f)
{
	if (f != NULL && copy_top == f)
		copy_top = f->prev;
}

/* The maintenance role's copy, for crm.compliance_report(); an older entry for the relation is replaced. */
static void
record_copy(CrmCopyFrame *f, Oid relid, const char *sources)
{
	CrmUserSwitch sw;
	Oid			types[5] = {OIDOID, TEXTOID, TEXTOID, TEXTOID, INT8OID};
	Datum		vals[5];

	vals[0] = ObjectIdGetDatum(relid);
	vals[1] = CStringGetTextDatum(qualified(relid));
	vals[2] = CStringGetTextDatum(f->what);
	vals[3] = CStringGetTextDatum(sources);
	vals[4] = Int64GetDatum((int64) f->rows);
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute_with_args("DELETE FROM crm.data_copy d WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
								  " WHERE c.oid OPERATOR(pg_catalog.=) d.relation::pg_catalog.oid)",
								  0, NULL, NULL, NULL, false, 0) != SPI_OK_DELETE ||
			SPI_execute_with_args("INSERT INTO crm.data_copy AS d (relation, relname, how, sources, rows)"
								  " VALUES ($1::pg_catalog.regclass, $2, $3, $4::pg_catalog.jsonb, $5)"
								  " ON CONFLICT (relation) DO UPDATE SET relname = excluded.relname, how = excluded.how,"
								  " sources = excluded.sources, rows = excluded.rows, made_by = excluded.made_by,"
								  " made_at = excluded.made_at",
								  5, types, vals, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "crm: could not record the copy %s", f->target);
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
}

/* A statement that filled a relation from crm_data succeeded: EXPORT, and the record of a lasting copy. */
static void
copy_done(CrmCopyFrame *f)
{
	Oid			relid = f->rv ? RangeVarGetRelid(f->rv, NoLock, true) : f->relid;
	StringInfoData d;
	StringInfoData src;
	ListCell   *lc;
	bool		found;
	int64		principal;

	if (!f->read_data || !OidIsValid(relid))
		return;
	initStringInfo(&src);
	appendStringInfoChar(&src, '[');
	foreach(lc, f->sources)
	{
		if (lc != list_head(f->sources))
			appendStringInfoString(&src, ", ");
		escape_json(&src, get_rel_name(lfirst_oid(lc)));
	}
	appendStringInfoChar(&src, ']');
	initStringInfo(&d);
	appendStringInfoString(&d, "{\"how\": ");
	escape_json(&d, f->what);
	appendStringInfoString(&d, ", \"relation\": ");
	escape_json(&d, f->temp ? get_rel_name(relid) : qualified(relid));
	appendStringInfo(&d, ", \"rows\": %llu, \"objects\": %s}", (unsigned long long) f->rows, src.data);
	principal = crm_current_principal(&found);
	crm_auditq_session_event("EXPORT", NULL, 0, found ? principal : 0, d.data);
	if (!f->temp)
		record_copy(f, relid, src.data);
	else if (!list_member_oid(temp_copies, relid))
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		temp_copies = lappend_oid(temp_copies, relid);
		MemoryContextSwitchTo(old);
	}
}

/*
 * Called by the executor hook for every query: while a relation is being filled, a query that
 * reads crm_data (the fill itself, or a query inside a function it calls) is refused unless the
 * copy is allowed; then it is noted for EXPORT.
 */
static void
check_copy_sources(QueryDesc *qd, CrmCopyFrame *own)
{
	ReachCtx	cx = {data_nsp(), true, NIL, InvalidOid};
	ListCell   *lc;

	foreach(lc, qd->plannedstmt->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

		cx.found = InvalidOid;
		/* a write's own targets outside crm_data are not read into it (UPDATE of a copy) */
		if (own != NULL && list_member_int(qd->plannedstmt->resultRelations, foreach_current_index(lc) + 1) &&
			get_rel_namespace(rte->relid) != cx.nsp)
			continue;
		if (rte->rtekind != RTE_RELATION || !rel_reaches(rte->relid, &cx))
			continue;
		if (!copy_top->allowed)
			refuse_copy(copy_top, cx.found);
		copy_top->read_data = true;
		if (!list_member_oid(copy_top->sources, cx.found))
		{
			MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(copy_top));

			copy_top->sources = lappend_oid(copy_top->sources, cx.found);
			MemoryContextSwitchTo(old);
		}
	}
}

/*
 * A view over crm_data owned by a role that bypasses row security shows every record to whoever
 * reads it (row security is checked as the view's owner); masking still follows the reader, but
 * rows would not. Refused to everyone but the maintenance role.
 */
static void
check_view_owners(QueryDesc *qd)
{
	Oid			nsp = InvalidOid;
	ListCell   *lc;

	foreach(lc, qd->plannedstmt->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);
		Oid			owner = rte->checkAsUser;

		if (rte->rtekind != RTE_RELATION || !OidIsValid(owner))
			continue;
		if (!OidIsValid(nsp) && !OidIsValid(nsp = data_nsp()))
			return;
		if (get_rel_namespace(rte->relid) != nsp || !(superuser_arg(owner) || has_bypassrls_privilege(owner)))
			continue;
		if (!crm_ready() || is_maintenance())
			return;
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("reading crm_data.%s through a view owned by role \"%s\" is not allowed",
						get_rel_name(rte->relid), GetUserNameFromId(owner, false)),
				 errdetail("That role bypasses row-level security, so the view would show every record to whoever may read it."),
				 errhint("Make the view security_invoker (ALTER VIEW ... SET (security_invoker = true)), or give it an owner that does not bypass row security.")));
	}
}

void
crm_copies_executor_start(QueryDesc *qd, int eflags)
{
	forget_write(qd);
	if (IsParallelWorker() || crm_internal_depth > 0 || ri_query())
		return;
	if (copy_top != NULL)
		check_copy_sources(qd, NULL);
	check_view_owners(qd);
	if (!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
	{
		note_data_portal(qd);
		start_write(qd);
	}
}

/* rows written into the relation being filled */
void
crm_copies_executor_end(QueryDesc *qd)
{
	forget_write(qd);
	if (copy_top != NULL && qd->estate != NULL && qd->dest != NULL &&
		(qd->dest->mydest == DestIntoRel || qd->dest->mydest == DestTransientRel))
		copy_top->rows += qd->estate->es_processed;
}

/* --- writes: INSERT, UPDATE, DELETE, MERGE, COPY FROM, ALTER TABLE into a relation outside crm ------ */

/*
 * A relation a write fills that would hold a copy: anything outside schemas crm and crm_data (a
 * view or foreign table too). crm's own writes go to crm and crm_data; those are not copies.
 */
static bool
copy_target(Oid relid, bool *temp)
{
	Oid			nsp = OidIsValid(relid) ? get_rel_namespace(relid) : InvalidOid;

	if (!OidIsValid(nsp) || nsp == data_nsp() || nsp == get_namespace_oid("crm", true))
		return false;
	*temp = get_rel_persistence(relid) == RELPERSISTENCE_TEMP;
	return true;
}

/* Of the relations a statement writes: the first permanent copy target, else a temporary one. */
static Oid
written_relation(List *relids, bool *temp)
{
	Oid			temp_rel = InvalidOid;
	ListCell   *lc;
	bool		t;

	foreach(lc, relids)
	{
		if (!copy_target(lfirst_oid(lc), &t))
			continue;
		if (!t)
		{
			*temp = false;
			return lfirst_oid(lc);
		}
		if (!OidIsValid(temp_rel))
			temp_rel = lfirst_oid(lc);
	}
	*temp = true;
	return temp_rel;
}

static CrmCopyFrame *
new_frame(const char *what, Oid relid, bool temp)
{
	CrmCopyFrame *f = MemoryContextAllocZero(TopMemoryContext, sizeof(CrmCopyFrame));

	f->what = what;
	f->relid = relid;
	f->temp = temp;
	f->target = MemoryContextStrdup(TopMemoryContext, qualified(relid));
	f->allowed = temp || is_maintenance();
	return f;
}

static void
free_frame(CrmCopyFrame *f)
{
	list_free(f->sources);
	pfree(f->target);
	pfree(f);
}

/* A frame for COPY FROM / ALTER TABLE on a copy target: what its defaults and expressions read. */
static CrmCopyFrame *
push_fill(Node *stmt)
{
	RangeVar   *rv = IsA(stmt, CopyStmt) ? ((CopyStmt *) stmt)->relation : ((AlterTableStmt *) stmt)->relation;
	Oid			relid;
	bool		temp;
	CrmCopyFrame *f;

	if ((IsA(stmt, CopyStmt) && !((CopyStmt *) stmt)->is_from) || rv == NULL)
		return NULL;
	relid = RangeVarGetRelid(rv, NoLock, true);
	if (!copy_target(relid, &temp))
		return NULL;
	/* palloc'd like the other utility frames: the statement's context outlives it */
	f = palloc0(sizeof(CrmCopyFrame));
	f->what = IsA(stmt, CopyStmt) ? "COPY" : "ALTER TABLE";
	f->relid = relid;
	f->temp = temp;
	f->target = qualified(relid);
	f->allowed = temp || is_maintenance();
	check_data_portals(f);
	f->prev = copy_top;
	copy_top = f;
	return f;
}

static const char *
write_what(CmdType cmd)
{
	switch (cmd)
	{
		case CMD_INSERT:
			return "INSERT INTO";
		case CMD_UPDATE:
			return "UPDATE";
		case CMD_DELETE:
			return "DELETE FROM";
		case CMD_MERGE:
			return "MERGE INTO";
		default:
			return "WITH ... (a data-modifying WITH) writing";
	}
}

/* Foreign-key checks read the referenced table as its owner: existence, not a copy. */
static bool
ri_query(void)
{
	Oid			user;
	int			sec;

	GetUserIdAndSecContext(&user, &sec);
	return (sec & SECURITY_NOFORCE_RLS) != 0;
}

/*
 * At ExecutorStart of a write into a copy target: refused if the statement reads crm_data (views
 * expanded) unless allowed; its frame is then kept for ExecutorRun and ExecutorFinish, while which
 * every query that reads crm_data (a function's, a cursor fetched) is checked against it.
 */
static void
start_write(QueryDesc *qd)
{
	PlannedStmt *ps = qd->plannedstmt;
	List	   *relids = NIL;
	ListCell   *lc;
	CrmCopyFrame *f;
	CrmCopyFrame *save = copy_top;
	Oid			relid;
	bool		temp;

	if ((ps->commandType == CMD_SELECT && !ps->hasModifyingCTE) || ps->commandType == CMD_UTILITY ||
		ps->resultRelations == NIL || creating_extension || !crm_ready())
		return;
	foreach(lc, ps->resultRelations)
		relids = lappend_oid(relids, rt_fetch(lfirst_int(lc), ps->rtable)->relid);
	relid = written_relation(relids, &temp);
	list_free(relids);
	if (!OidIsValid(relid))
		return;
	f = new_frame(write_what(ps->commandType), relid, temp);
	f->qd = qd;
	PG_TRY();
	{
		check_data_portals(f);
		copy_top = f;
		check_copy_sources(qd, f);
	}
	PG_CATCH();
	{
		copy_top = save;
		free_frame(f);
		PG_RE_THROW();
	}
	PG_END_TRY();
	copy_top = save;
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		write_frames = lappend(write_frames, f);
		MemoryContextSwitchTo(old);
	}
}

static CrmCopyFrame *
find_write(QueryDesc *qd)
{
	ListCell   *lc;

	foreach(lc, write_frames)
		if (((CrmCopyFrame *) lfirst(lc))->qd == qd)
			return (CrmCopyFrame *) lfirst(lc);
	return NULL;
}

static void
forget_write(QueryDesc *qd)
{
	ListCell   *lc;

	foreach(lc, write_frames)
	{
		CrmCopyFrame *f = (CrmCopyFrame *) lfirst(lc);

		if (f->qd == qd && f != copy_top)
		{
			write_frames = foreach_delete_current(write_frames, lc);
			free_frame(f);
		}
	}
}

/*
 * Around ExecutorRun and ExecutorFinish (AFTER triggers): a write's frame is in force; outside
 * one, a query run while a copy is being made (a cursor opened before it and fetched inside a
 * function: FETCH starts no executor) is checked like one started then.
 */
CrmCopyFrame *
crm_copies_enter(QueryDesc *qd, bool run)
{
	CrmCopyFrame *f = find_write(qd);

	if (f != NULL)
	{
		f->prev = copy_top;
		copy_top = f;
		return f;
	}
	if (run && copy_top != NULL && copy_top->qd != qd && !IsParallelWorker() && crm_internal_depth == 0 &&
		!ri_query())
		check_copy_sources(qd, NULL);
	return NULL;
}

void
crm_copies_leave(CrmCopyFrame *f)
{
	if (f != NULL && copy_top == f)
		copy_top = f->prev;
}

/* After ExecutorFinish: a write that read crm_data (allowed) is an EXPORT, and a copy from now on. */
void
crm_copies_write_done(QueryDesc *qd)
{
	CrmCopyFrame *f = find_write(qd);

	if (f == NULL)
		return;
	if (qd->estate != NULL)
		f->rows = qd->estate->es_processed;
	copy_done(f);
	forget_write(qd);
}

/*
 * Planning a write into a copy target folds immutable functions into constants (and runs stable
 * ones for estimates): what they read from crm_data would be written with no executor reading it.
 */
CrmCopyFrame *
crm_copies_plan_begin(Query *q)
{
	List	   *relids = NIL;
	ListCell   *lc;
	CrmCopyFrame *f;
	Oid			relid;
	bool		temp;

	if (IsParallelWorker() || crm_internal_depth > 0 || creating_extension || q->commandType == CMD_UTILITY ||
		(q->commandType == CMD_SELECT && !q->hasModifyingCTE) || !crm_ready())
		return NULL;
	if (q->commandType != CMD_SELECT && q->resultRelation > 0)
		relids = lappend_oid(relids, rt_fetch(q->resultRelation, q->rtable)->relid);
	foreach(lc, q->cteList)
	{
		Query	   *cq = (Query *) ((CommonTableExpr *) lfirst(lc))->ctequery;

		if (IsA(cq, Query) && cq->commandType != CMD_SELECT && cq->resultRelation > 0)
			relids = lappend_oid(relids, rt_fetch(cq->resultRelation, cq->rtable)->relid);
	}
	relid = written_relation(relids, &temp);
	list_free(relids);
	if (!OidIsValid(relid))
		return NULL;
	f = new_frame(write_what(q->commandType), relid, temp);
	f->prev = copy_top;
	copy_top = f;
	return f;
}

void
crm_copies_plan_end(CrmCopyFrame *f, bool ok)
{
	if (f == NULL)
		return;
	if (copy_top == f)
		copy_top = f->prev;
	if (ok)
		copy_done(f);
	free_frame(f);
}

/* --- cursors that keep rows of crm_data (WITH HOLD, or filled by a statement at their first fetch) - */

typedef struct DataPortal
{
	Portal		portal;
	TimestampTz created;
	char		name[NAMEDATALEN];
} DataPortal;

static bool
portal_alive(DataPortal *d)
{
	Portal		p = GetPortalByName(d->name);

	return p != NULL && p == d->portal && p->creation_time == d->created;
}

/*
 * A query run for a cursor whose rows are kept in a store (WITH HOLD after commit, a RETURNING
 * cursor) is read from there by FETCH with no executor: remember such a cursor that read crm_data.
 */
static void
note_data_portal(QueryDesc *qd)
{
	Portal		p = ActivePortal;
	ReachCtx	cx = {InvalidOid, true, NIL, InvalidOid};
	ListCell   *lc;
	DataPortal *d;
	bool		reads = false;

	if (p == NULL || p->name == NULL || p->name[0] == '\0' ||
		(!(p->cursorOptions & CURSOR_OPT_HOLD) && p->strategy == PORTAL_ONE_SELECT) || !crm_ready())
		return;
	cx.nsp = data_nsp();
	foreach(lc, qd->plannedstmt->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

		if (rte->rtekind == RTE_RELATION && rel_reaches(rte->relid, &cx))
		{
			reads = true;
			break;
		}
	}
	if (!reads)
		return;
	foreach(lc, data_portals)
	{
		d = (DataPortal *) lfirst(lc);
		if (d->portal == p && d->created == p->creation_time)
			return;
		if (!portal_alive(d))
		{
			data_portals = foreach_delete_current(data_portals, lc);
			pfree(d);
		}
	}
	d = MemoryContextAllocZero(TopMemoryContext, sizeof(DataPortal));
	d->portal = p;
	d->created = p->creation_time;
	strlcpy(d->name, p->name, NAMEDATALEN);
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		data_portals = lappend(data_portals, d);
		MemoryContextSwitchTo(old);
	}
}

/* A copy that is not allowed may not start while such a cursor is open: FETCH would fill it. */
static void
check_data_portals(CrmCopyFrame *f)
{
	ListCell   *lc;

	if (f->allowed)
		return;
	foreach(lc, data_portals)
	{
		DataPortal *d = (DataPortal *) lfirst(lc);

		if (!portal_alive(d))
		{
			data_portals = foreach_delete_current(data_portals, lc);
			pfree(d);
			continue;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s %s is not allowed while cursor %s, which read crm_data, is open",
						f->what, f->target, quote_identifier(crm_short(d->name))),
				 errdetail("The cursor keeps rows outside crm's row security; fetched into the copy, they would be shown to whoever may read it."),
				 errhint("Close the cursor first (CLOSE %s).", quote_identifier(crm_short(d->name)))));
	}
}

/* At the end of a transaction: what was not ended is gone with it. */
static void
copies_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_ABORT)
	{
		ListCell   *lc;

		foreach(lc, write_frames)
			free_frame((CrmCopyFrame *) lfirst(lc));
		list_free(write_frames);
		write_frames = NIL;
	}
}

void
crm_copies_init(void)
{
	RegisterXactCallback(copies_xact_callback, NULL);
}

/* --- policies and rules ----------------------------------------------------------------------------- */

/* Is this a crm policy that pg_restore recreates on a restored table (one that is not there yet)? */
static bool
restoring_crm_policy(CreatePolicyStmt *p, Oid relid)
{
	const char *name = p->policy_name;
	bool		canonical;

	if (strcmp(GetConfigOption("row_security", false, false), "off") != 0 || !superuser())
		return false;
	if (strncmp(name, "crm_wall_", 9) == 0)
		canonical = !p->permissive;
	else
		canonical = p->permissive && (strcmp(name, "crm_read") == 0 || strcmp(name, "crm_create") == 0 ||
									  strcmp(name, "crm_edit") == 0 || strcmp(name, "crm_delete") == 0);
	return canonical && !OidIsValid(get_relation_policy_oid(relid, name, true));
}

static void
check_policy(Node *stmt)
{
	const char *detail = "Row security on managed tables is built by crm from its grants, shares and walls; a policy changed by hand would change who sees which records.";
	const char *hint = "Use crm.grant_object(), crm.share() or crm.add_wall().";
	Oid			relid;

	switch (nodeTag(stmt))
	{
		case T_CreatePolicyStmt:
			relid = RangeVarGetRelid(((CreatePolicyStmt *) stmt)->table, NoLock, true);
			if (is_managed(relid) && relid != policy_gate && !restoring_crm_policy((CreatePolicyStmt *) stmt, relid))
				refuse_ddl("CREATE POLICY", ((CreatePolicyStmt *) stmt)->policy_name, relid, detail, hint);
			break;
		case T_AlterPolicyStmt:
			relid = RangeVarGetRelid(((AlterPolicyStmt *) stmt)->table, NoLock, true);
			if (is_managed(relid) && relid != policy_gate)
				refuse_ddl("ALTER POLICY", ((AlterPolicyStmt *) stmt)->policy_name, relid, detail, hint);
			break;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType != OBJECT_POLICY)
				break;
			relid = RangeVarGetRelid(((RenameStmt *) stmt)->relation, NoLock, true);
			if (is_managed(relid) && relid != policy_gate)
				refuse_ddl("ALTER POLICY ... RENAME of", ((RenameStmt *) stmt)->subname, relid, detail, hint);
			break;
		case T_DropStmt:
			{
				DropStmt   *d = (DropStmt *) stmt;
				ListCell   *lc;

				if (d->removeType != OBJECT_POLICY)
					break;
				foreach(lc, d->objects)
				{
					List	   *names = (List *) lfirst(lc);

					relid = RangeVarGetRelid(makeRangeVarFromNameList(list_truncate(list_copy(names), list_length(names) - 1)),
											 NoLock, true);
					if (is_managed(relid) && relid != policy_gate)
						refuse_ddl("DROP POLICY", strVal(llast(names)), relid, detail, hint);
				}
				break;
			}
		default:
			break;
	}
}

/* Refuse what would let data escape crm's row security; called by the utility hook before running it. */
void
crm_copies_check_utility(Node *stmt)
{
	if (!(IsA(stmt, CreatePolicyStmt) || IsA(stmt, AlterPolicyStmt) || IsA(stmt, RenameStmt) || IsA(stmt, DropStmt)) ||
		creating_extension || !crm_ready())
		return;
	check_policy(stmt);
}

/*
 * After a utility statement ran: a relation filled from crm_data is recorded; a rule on a relation
 * that reads or writes crm_data (the new rule's actions included) is refused, undoing it.
 */
void
crm_copies_after_utility(Node *stmt, CrmCopyFrame *copy)
{
	if (copy != NULL)
		copy_done(copy);
	if (IsA(stmt, RuleStmt) && !creating_extension && crm_ready())
	{
		RuleStmt   *r = (RuleStmt *) stmt;
		Oid			relid = RangeVarGetRelid(r->relation, NoLock, true);
		ReachCtx	cx = {data_nsp(), false, NIL, InvalidOid};

		CommandCounterIncrement();
		if (OidIsValid(relid) && rel_reaches(relid, &cx))
			refuse_ddl("CREATE RULE", r->rulename, relid,
					   psprintf("It reads or writes crm_data.%s; a rule runs with its owner's rights and could capture or redirect what others read and write through it.",
								get_rel_name(cx.found)),
					   "Use crm's rules (crm.create_rule) or write to the crm_data table directly.");
	}
}

/*
 * SQL function: crm._apply_policies(object text) returns void — rebuilds the row security policies
 * of crm_data.<object> from crm's catalogs (crm._build_policies), the one way policies on managed
 * tables change. Not granted to anyone: crm's SECURITY DEFINER API calls it.
 */
PG_FUNCTION_INFO_V1(crm_apply_policies);
Datum
crm_apply_policies(PG_FUNCTION_ARGS)
{
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			nsp = data_nsp();
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(object, nsp) : InvalidOid;
	Oid			save = policy_gate;
	Oid			types[1] = {TEXTOID};
	Datum		vals[1] = {PG_GETARG_DATUM(0)};

	if (!is_managed(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("managed table crm_data.%s does not exist", crm_short(quote_identifier(object)))));
	policy_gate = relid;
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute_with_args("SELECT crm._build_policies($1::pg_catalog.text)", 1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "crm: could not build the policies of %s", object);
		SPI_finish();
	}
	PG_FINALLY();
	{
		policy_gate = save;
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}
