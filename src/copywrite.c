/*
 * copywrite.c: copies of crm_data made by writes, and cursors that would fill a copy (see copies.c).
 *
 * A write into a relation outside crm and crm_data (INSERT, UPDATE, DELETE, MERGE, a data-modifying
 * WITH; COPY FROM and ALTER TABLE, which evaluate defaults into it) is a copy like CREATE TABLE AS:
 * refused if it reads crm_data, unless it is into a temporary table (an EXPORT, and the table a copy
 * from then on) or made by the maintenance role (an EXPORT, recorded in crm.data_copy). It is
 * checked while it is planned (IMMUTABLE functions are folded into constants then), when its
 * executor starts (its query, views expanded) and while it runs and finishes (functions, triggers,
 * cursors fetched inside it); it may not start inside a running query that reads crm_data (which
 * would hand it what it reads as a function's arguments). A cursor keeping rows of crm_data outside an executor (WITH HOLD
 * after commit, a RETURNING cursor) is read by FETCH with no executor at all: no copy that is not
 * allowed starts while one is open.
 */
#include "crm.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "parser/parsetree.h"
#include "tcop/cmdtag.h"
#include "tcop/pquery.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"

#include "copies_int.h"

static List *write_frames = NIL;	/* frames of writes started and not yet ended (TopMemoryContext) */
static List *data_portals = NIL;	/* cursors that read crm_data and keep rows outside an executor */
static int	running_reads = 0;		/* queries reading crm_data now in ExecutorRun */

static void check_running_reads(CrmCopyFrame *f);

/*
 * A relation a write fills that would hold a copy: anything outside schemas crm and crm_data (a
 * view or foreign table too). crm's own writes go to crm and crm_data; those are not copies.
 */
static bool
copy_target(Oid relid, bool *temp)
{
	Oid			nsp = OidIsValid(relid) ? get_rel_namespace(relid) : InvalidOid;

	if (!OidIsValid(nsp) || nsp == cp_data_nsp() || nsp == get_namespace_oid("crm", true))
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
	f->target = MemoryContextStrdup(TopMemoryContext, cp_qualified(relid));
	f->allowed = temp || cp_is_maintenance();
	return f;
}

static void
free_frame(CrmCopyFrame *f)
{
	list_free(f->sources);
	pfree(f->target);
	pfree(f);
}

/*
 * The relation a utility statement fills from expressions it evaluates (defaults, USING clauses,
 * index expressions), and what to call the statement; NULL when it fills none.
 */
static RangeVar *
filled_relation(Node *stmt, const char **what, bool *is_index)
{
	*is_index = false;
	switch (nodeTag(stmt))
	{
		case T_CopyStmt:
			*what = "COPY";
			return ((CopyStmt *) stmt)->is_from ? ((CopyStmt *) stmt)->relation : NULL;
		case T_AlterTableStmt:
			*what = "ALTER TABLE";
			return ((AlterTableStmt *) stmt)->relation;
		case T_IndexStmt:
			/* an expression index keeps what its expressions read; index-only scans hand it back */
			*what = "CREATE INDEX ON";
			return ((IndexStmt *) stmt)->relation;
		case T_ReindexStmt:
			*what = "REINDEX";
			*is_index = ((ReindexStmt *) stmt)->kind == REINDEX_OBJECT_INDEX;
			return ((ReindexStmt *) stmt)->kind == REINDEX_OBJECT_TABLE || *is_index ? ((ReindexStmt *) stmt)->relation : NULL;
		case T_ClusterStmt:
			*what = "CLUSTER";
			return ((ClusterStmt *) stmt)->relation;
		default:
			return NULL;
	}
}

/* A frame for COPY FROM, ALTER TABLE, CREATE INDEX, REINDEX, CLUSTER on a copy target. */
CrmCopyFrame *
cp_push_fill(Node *stmt)
{
	const char *what = NULL;
	bool		is_index;
	RangeVar   *rv = filled_relation(stmt, &what, &is_index);
	Oid			relid;
	bool		temp;
	CrmCopyFrame *f;

	if (rv == NULL)
		return NULL;
	relid = RangeVarGetRelid(rv, NoLock, true);
	if (is_index && OidIsValid(relid))
		relid = IndexGetRelation(relid, true);
	if (!copy_target(relid, &temp))
		return NULL;
	/* palloc'd like the other utility frames: the statement's context outlives it */
	f = palloc0(sizeof(CrmCopyFrame));
	f->what = what;
	f->relid = relid;
	f->temp = temp;
	f->target = cp_qualified(relid);
	f->allowed = temp || cp_is_maintenance();
	cp_check_data_portals(f);
	check_running_reads(f);
	f->prev = cp_copy_top;
	cp_copy_top = f;
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
bool
cp_ri_query(void)
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
void
cp_start_write(QueryDesc *qd)
{
	PlannedStmt *ps = qd->plannedstmt;
	List	   *relids = NIL;
	ListCell   *lc;
	CrmCopyFrame *f;
	CrmCopyFrame *save = cp_copy_top;
	Oid			relid;
	bool		temp;

	if ((ps->commandType == CMD_SELECT && !ps->hasModifyingCTE) || ps->commandType == CMD_UTILITY ||
		ps->resultRelations == NIL || creating_extension || !cp_crm_ready())
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
		cp_check_data_portals(f);
		check_running_reads(f);
		cp_copy_top = f;
		cp_check_copy_sources(qd, f);
	}
	PG_CATCH();
	{
		cp_copy_top = save;
		free_frame(f);
		PG_RE_THROW();
	}
	PG_END_TRY();
	cp_copy_top = save;
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

void
cp_forget_write(QueryDesc *qd)
{
	ListCell   *lc;

	foreach(lc, write_frames)
	{
		CrmCopyFrame *f = (CrmCopyFrame *) lfirst(lc);

		if (f->qd == qd && f != cp_copy_top)
		{
			write_frames = foreach_delete_current(write_frames, lc);
			free_frame(f);
		}
	}
}

static CrmCopyFrame *
push_frame(CrmCopyFrame *f)
{
	f->prev = cp_copy_top;
	cp_copy_top = f;
	return f;
}

/*
 * Does a query read crm_data itself (views expanded; a temporary copy too), other than as the
 * table it writes? Cheap: no catalog query. While one runs, what it reads can be handed to a write
 * inside it as a function's arguments (SELECT f(id_number) FROM crm_data.customer).
 */
static bool
reads_data(QueryDesc *qd)
{
	Oid			nsp = InvalidOid;
	ListCell   *lc;

	foreach(lc, qd->plannedstmt->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

		if (rte->rtekind != RTE_RELATION ||
			list_member_int(qd->plannedstmt->resultRelations, foreach_current_index(lc) + 1))
			continue;
		if (!OidIsValid(nsp) && !OidIsValid(nsp = cp_data_nsp()))
			return false;
		if (get_rel_namespace(rte->relid) == nsp || cp_is_temp_copy(rte->relid))
			return true;
	}
	return false;
}

/* A write that is not allowed may not start inside a query that reads crm_data. */
static void
check_running_reads(CrmCopyFrame *f)
{
	if (f->allowed || running_reads == 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s %s inside a query reading crm_data is not allowed", f->what, f->target),
			 errdetail("The query would hand what it reads to the write (a function's arguments), a copy shown to whoever may read it."),
			 errhint("Create a view instead: row security and masking follow whoever reads a view. A TEMPORARY table is allowed (audited as EXPORT).")));
}

/*
 * DDL started inside a query that reads crm_data (a function in its select list running EXECUTE):
 * its text would keep what the query read, in the catalogs (a comment, an enum label, a view's or a
 * function's body) that every login may read. Refused but for the maintenance role; statements that
 * keep nothing (transaction control, settings, cursors, temporary tables) stay allowed, and the
 * statements with frames of their own (CREATE TABLE AS, COPY, ALTER TABLE, ...) are checked there.
 */
void
crm_copies_check_ddl(Node *stmt)
{
	if (running_reads == 0 || creating_extension || crm_internal_depth > 0 || !cp_crm_ready() ||
		cp_is_maintenance())
		return;
	switch (nodeTag(stmt))
	{
		case T_TransactionStmt:
		case T_VariableSetStmt:
		case T_VariableShowStmt:
		case T_DeclareCursorStmt:
		case T_FetchStmt:
		case T_ClosePortalStmt:
		case T_PrepareStmt:
		case T_ExecuteStmt:
		case T_DeallocateStmt:
		case T_ExplainStmt:
		case T_CallStmt:
		case T_DoStmt:
		case T_LockStmt:
		case T_DiscardStmt:
		case T_CreateTableAsStmt:
		case T_RefreshMatViewStmt:
		case T_CopyStmt:
		case T_AlterTableStmt:
		case T_IndexStmt:
		case T_ReindexStmt:
		case T_ClusterStmt:
			return;
		case T_CreateStmt:
			if (((CreateStmt *) stmt)->relation->relpersistence == RELPERSISTENCE_TEMP)
				return;
			break;
		default:
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s inside a query reading crm_data is not allowed", CreateCommandName(stmt)),
			 errdetail("What the statement stores (a name, a comment, a body) could keep what the query read, where every login may read it."),
			 errhint("Run the statement on its own, outside queries over crm_data.")));
}

/*
 * A large object created inside a query that reads crm_data (SELECT lo_from_bytea(0, ...) FROM
 * crm_data.customer) would keep what the query read, for whoever is granted the object. Called from
 * the object-access hook when a large object is created.
 */
void
crm_copies_check_large_object(void)
{
	if (running_reads == 0 || creating_extension || crm_internal_depth > 0 || !IsTransactionState() ||
		!cp_crm_ready() || cp_is_maintenance())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("creating a large object inside a query reading crm_data is not allowed"),
			 errdetail("The object would keep what the query read, a copy shown to whoever may read it."),
			 errhint("Create a view instead: row security and masking follow whoever reads a view.")));
}

/*
 * Around ExecutorRun and ExecutorFinish (AFTER triggers): a write's frame is in force; outside
 * one, a query run while a copy is being made (a cursor opened before it and fetched inside a
 * function: FETCH starts no executor) is checked like one started then.
 */
CrmCopyFrame *
crm_copies_enter(QueryDesc *qd, bool run, bool *reading)
{
	CrmCopyFrame *f = find_write(qd);

	*reading = false;
	if (IsParallelWorker() || crm_internal_depth > 0 || cp_ri_query())
		return f != NULL ? push_frame(f) : NULL;
	if (run && reads_data(qd))
	{
		running_reads++;
		*reading = true;
	}
	if (f != NULL)
		return push_frame(f);
	if (run && cp_copy_top != NULL && cp_copy_top->qd != qd)
		cp_check_copy_sources(qd, NULL);
	return NULL;
}

void
crm_copies_leave(CrmCopyFrame *f, bool reading)
{
	if (f != NULL && cp_copy_top == f)
		cp_copy_top = f->prev;
	if (reading && running_reads > 0)
		running_reads--;
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
	cp_copy_done(f);
	cp_forget_write(qd);
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
		(q->commandType == CMD_SELECT && !q->hasModifyingCTE) || !cp_crm_ready())
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
	PG_TRY();
	{
		check_running_reads(f);
	}
	PG_CATCH();
	{
		free_frame(f);
		PG_RE_THROW();
	}
	PG_END_TRY();
	f->prev = cp_copy_top;
	cp_copy_top = f;
	return f;
}

void
crm_copies_plan_end(CrmCopyFrame *f, bool ok)
{
	if (f == NULL)
		return;
	if (cp_copy_top == f)
		cp_copy_top = f->prev;
	if (ok)
		cp_copy_done(f);
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
void
cp_note_data_portal(QueryDesc *qd)
{
	Portal		p = ActivePortal;
	ReachCtx	cx = {InvalidOid, true, NIL, InvalidOid};
	ListCell   *lc;
	DataPortal *d;
	bool		reads = false;

	if (p == NULL || p->name == NULL || p->name[0] == '\0' ||
		(!(p->cursorOptions & CURSOR_OPT_HOLD) && p->strategy == PORTAL_ONE_SELECT) || !cp_crm_ready())
		return;
	cx.nsp = cp_data_nsp();
	foreach(lc, qd->plannedstmt->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

		if (rte->rtekind == RTE_RELATION && cp_rel_reaches(rte->relid, &cx))
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
void
cp_check_data_portals(CrmCopyFrame *f)
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
		running_reads = 0;
	}
}

void
crm_copies_init(void)
{
	RegisterXactCallback(copies_xact_callback, NULL);
}
