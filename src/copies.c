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
 *     data-modifying WITH, COPY FROM, ALTER TABLE evaluating defaults) is a copy too, and cursors
 *     over crm_data fetched while a copy is made are checked: see copywrite.c.
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
#include "utils/rel.h"

#include "copies_int.h"

CrmCopyFrame *cp_copy_top = NULL;
static List *temp_copies = NIL;	/* this session's temporary copies of crm_data (TopMemoryContext) */
static Oid	policy_gate = InvalidOid;	/* the managed table crm._apply_policies() is rebuilding */

Oid
cp_data_nsp(void)
{
	return get_namespace_oid("crm_data", true);
}

bool
cp_crm_ready(void)
{
	Oid			nsp = get_namespace_oid("crm", true);

	return IsTransactionState() && OidIsValid(cp_data_nsp()) && OidIsValid(nsp) &&
		OidIsValid(get_relname_relid("principal", nsp));
}

/* crm's maintenance role: a superuser or BYPASSRLS role acting as no principal */
bool
cp_is_maintenance(void)
{
	bool		found;

	(void) crm_current_principal(&found);
	return !found && (superuser() || has_bypassrls_privilege(GetUserId()));
}

static bool
is_managed(Oid relid)
{
	return OidIsValid(relid) && get_rel_namespace(relid) == cp_data_nsp() && get_rel_relkind(relid) == RELKIND_RELATION;
}

char *
cp_qualified(Oid relid)
{
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));

	return quote_qualified_identifier(nsp, get_rel_name(relid));
}

/* --- does a query or relation reach crm_data? ------------------------------------------------------- */



static bool
reach_walker(Node *node, ReachCtx *cx)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		return rte->rtekind == RTE_RELATION && cp_rel_reaches(rte->relid, cx);
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, reach_walker, (void *) cx, QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, reach_walker, (void *) cx);
}

bool
cp_is_temp_copy(Oid relid)
{
	return list_member_oid(temp_copies, relid);
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
bool
cp_rel_reaches(Oid relid, ReachCtx *cx)
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
			 errmsg("%s %s reading %s is not allowed", f->what, f->target, cp_qualified(source)),
			 errdetail("A copy keeps the records and values its maker may see and shows them to whoever may read it: crm's row security and masking do not follow it. Only the maintenance role (a superuser acting as no principal) may make one."),
			 errhint("Create a view instead: row security and masking follow whoever reads a view. A TEMPORARY table is allowed (audited as EXPORT).")));
}

static void
refuse_ddl(const char *what, const char *name, Oid relid, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s %s on %s is not allowed", what, quote_identifier(name), cp_qualified(relid)),
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
	if (creating_extension || !cp_crm_ready())
		return NULL;
	crm_copies_check_ddl(stmt);
	/* COPY FROM, ALTER TABLE and index builds evaluate expressions into the relation */
	if (IsA(stmt, CopyStmt) || IsA(stmt, AlterTableStmt) || IsA(stmt, IndexStmt) || IsA(stmt, ReindexStmt) ||
		IsA(stmt, ClusterStmt))
		return cp_push_fill(stmt);
	if (!(IsA(stmt, CreateTableAsStmt) || IsA(stmt, RefreshMatViewStmt)))
		return NULL;
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
		f->target = OidIsValid(relid) ? cp_qualified(relid) : pstrdup(quote_identifier(r->relation->relname));
	}
	f->allowed = f->temp || cp_is_maintenance();
	cp_check_data_portals(f);
	/* the query tree, views expanded: catches WITH NO DATA too (its REFRESH would copy) */
	if (!f->allowed && IsA(stmt, CreateTableAsStmt) && IsA(((CreateTableAsStmt *) stmt)->query, Query))
	{
		ReachCtx	cx = {cp_data_nsp(), true, NIL, InvalidOid};

		if (reach_walker(((CreateTableAsStmt *) stmt)->query, &cx))
			refuse_copy(f, cx.found);
	}
	f->prev = cp_copy_top;
	cp_copy_top = f;
	return f;
}

/* ... and after it ran or failed */
void
crm_copies_pop(CrmCopyFrame *f)
{
	if (f != NULL && cp_copy_top == f)
		cp_copy_top = f->prev;
}

/* The maintenance role's copy, for crm.compliance_report(); an older entry for the relation is replaced. */
static void
record_copy(CrmCopyFrame *f, Oid relid, const char *sources)
{
	CrmUserSwitch sw;
	Oid			types[5] = {OIDOID, TEXTOID, TEXTOID, TEXTOID, INT8OID};
	Datum		vals[5];

	vals[0] = ObjectIdGetDatum(relid);
	vals[1] = CStringGetTextDatum(cp_qualified(relid));
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
void
cp_copy_done(CrmCopyFrame *f)
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
	escape_json(&d, f->temp ? get_rel_name(relid) : cp_qualified(relid));
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
void
cp_check_copy_sources(QueryDesc *qd, CrmCopyFrame *own)
{
	ReachCtx	cx = {cp_data_nsp(), true, NIL, InvalidOid};
	ListCell   *lc;

	foreach(lc, qd->plannedstmt->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

		cx.found = InvalidOid;
		/* a write's own targets outside crm_data are not read into it (UPDATE of a copy) */
		if (own != NULL && list_member_int(qd->plannedstmt->resultRelations, foreach_current_index(lc) + 1) &&
			get_rel_namespace(rte->relid) != cx.nsp)
			continue;
		if (rte->rtekind != RTE_RELATION || !cp_rel_reaches(rte->relid, &cx))
			continue;
		if (!cp_copy_top->allowed)
			refuse_copy(cp_copy_top, cx.found);
		cp_copy_top->read_data = true;
		if (!list_member_oid(cp_copy_top->sources, cx.found))
		{
			MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(cp_copy_top));

			cp_copy_top->sources = lappend_oid(cp_copy_top->sources, cx.found);
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
		if (!OidIsValid(nsp) && !OidIsValid(nsp = cp_data_nsp()))
			return;
		if (get_rel_namespace(rte->relid) != nsp || !(superuser_arg(owner) || has_bypassrls_privilege(owner)))
			continue;
		if (!cp_crm_ready() || cp_is_maintenance())
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
	cp_forget_write(qd);
	if (IsParallelWorker() || crm_internal_depth > 0 || cp_ri_query())
		return;
	if (cp_copy_top != NULL)
		cp_check_copy_sources(qd, NULL);
	check_view_owners(qd);
	if (!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
	{
		cp_note_data_portal(qd);
		cp_start_write(qd);
	}
}

/* rows written into the relation being filled */
void
crm_copies_executor_end(QueryDesc *qd)
{
	cp_forget_write(qd);
	if (cp_copy_top != NULL && qd->estate != NULL && qd->dest != NULL &&
		(qd->dest->mydest == DestIntoRel || qd->dest->mydest == DestTransientRel))
		cp_copy_top->rows += qd->estate->es_processed;
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
		creating_extension || !cp_crm_ready())
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
		cp_copy_done(copy);
	if (IsA(stmt, RuleStmt) && !creating_extension && cp_crm_ready())
	{
		RuleStmt   *r = (RuleStmt *) stmt;
		Oid			relid = RangeVarGetRelid(r->relation, NoLock, true);
		ReachCtx	cx = {cp_data_nsp(), false, NIL, InvalidOid};

		CommandCounterIncrement();
		if (OidIsValid(relid) && cp_rel_reaches(relid, &cx))
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
	Oid			nsp = cp_data_nsp();
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
