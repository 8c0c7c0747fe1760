/*
 * auditread.c: auditing reads. The masking hook wraps each reference to a `sensitive` field that
 * the acting principal may read unmasked, in the select lists and RETURNING lists of its queries,
 * in crm._saw(value, object, field, record id, owner, own_only): it passes the value through and
 * notes the record where the value is unmasked. When the outermost statement over managed tables
 * ends (or its transaction aborts: a read that happened stays a read), one READ_SENSITIVE event per
 * object goes to the audit queue with the field names, the row count and the record ids (or,
 * beyond crm.audit_max_ids, their count, range and a digest). COPY ... TO and result sets over
 * crm.export_threshold rows are EXPORT events.
 *
 * READ_SENSITIVE means unmasked values were returned. A table reference whose sensitive fields
 * appear only as crm._saw()'s value (crm_auditread_mark, at planning) is accounted for by those
 * calls alone: every value used anywhere passed through one, so a statement that read only masked
 * values records nothing. A sensitive field used anywhere else (a condition, a join, a sort key not
 * in the select list, HAVING, an outer reference) can reveal values of records it did not return:
 * the event then says "used_in_condition", and who_saw lists it as possible for every customer.
 */
#include "crm.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/sha2.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/primnodes.h"
#include "parser/parsetree.h"
#include "tcop/dest.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

typedef struct SeenObject
{
	char		object[NAMEDATALEN];
	List	   *fields;			/* of char * */
	int64	   *ids;
	int			nids;
	int			cap;
	bool		condition;		/* a sensitive field was used outside crm._saw(): ids are partial */
} SeenObject;

static List *seen = NIL;		/* of SeenObject *, in TopMemoryContext */
static int	depth = 0;			/* executing statements over managed tables */
static uint64 rows_out = 0;

static SeenObject *
seen_object(const char *object)
{
	ListCell   *lc;
	SeenObject *s;
	MemoryContext old;

	foreach(lc, seen)
	{
		s = lfirst(lc);
		if (strcmp(s->object, object) == 0)
			return s;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	s = palloc0(sizeof(SeenObject));
	strlcpy(s->object, object, NAMEDATALEN);
	s->cap = 64;
	s->ids = palloc(sizeof(int64) * s->cap);
	seen = lappend(seen, s);
	MemoryContextSwitchTo(old);
	return s;
}

/* SQL function: crm._saw(value anyelement, object text, field text, id bigint, owner bigint, own_only boolean) */
PG_FUNCTION_INFO_V1(crm_saw);
Datum
crm_saw(PG_FUNCTION_ARGS)
{
	Node	   *fe = fcinfo->flinfo ? fcinfo->flinfo->fn_expr : NULL;

	/* only the masking hook's calls count (they carry a form no hand-written call can have) */
	if (fe == NULL || !IsA(fe, FuncExpr) || ((FuncExpr *) fe)->funcformat != COERCE_IMPLICIT_CAST)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("crm._saw() is called only by crm's masking hook")));
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1) && !PG_ARGISNULL(2) && !PG_ARGISNULL(3))
	{
		bool		found;
		int64		me = crm_current_principal(&found);

		if (!PG_GETARG_BOOL(5) || (found && !PG_ARGISNULL(4) && PG_GETARG_INT64(4) == me))
		{
			char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(1));
			char	   *field = text_to_cstring(PG_GETARG_TEXT_PP(2));
			SeenObject *s = seen_object(object);
			int64		id = PG_GETARG_INT64(3);
			ListCell   *lc;
			bool		have = false;

			foreach(lc, s->fields)
				if (strcmp((char *) lfirst(lc), field) == 0)
					have = true;
			if (!have)
			{
				MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

				s->fields = lappend(s->fields, pstrdup(field));
				MemoryContextSwitchTo(old);
			}
			if (s->nids == 0 || s->ids[s->nids - 1] != id)
			{
				if (s->nids == s->cap)
				{
					s->cap *= 2;
					s->ids = repalloc(s->ids, sizeof(int64) * s->cap);
				}
				s->ids[s->nids++] = id;
			}
		}
	}
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a, y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

static void
emit(void)
{
	ListCell   *lc;
	bool		found;
	int64		principal;

	if (seen == NIL)
		return;
	principal = IsTransactionState() ? crm_current_principal(&found) : crm_last_principal;
	foreach(lc, seen)
	{
		SeenObject *s = lfirst(lc);
		StringInfoData d;
		ListCell   *f;
		int			n = 0;

		qsort(s->ids, s->nids, sizeof(int64), cmp_int64);
		for (int i = 0; i < s->nids; i++)
			if (i == 0 || s->ids[i] != s->ids[i - 1])
				s->ids[n++] = s->ids[i];
		initStringInfo(&d);
		appendStringInfoString(&d, "{\"fields\": [");
		foreach(f, s->fields)
		{
			if (f != list_head(s->fields))
				appendStringInfoString(&d, ", ");
			escape_json(&d, (char *) lfirst(f));
		}
		appendStringInfo(&d, "], \"rows\": %llu, \"records\": %d, ", (unsigned long long) rows_out, n);
		if (s->condition)
			appendStringInfoString(&d, "\"used_in_condition\": true, ");
		if (n == 0)
			appendStringInfoString(&d, "\"ids\": \"not recorded: the fields were used in a condition or an inner expression\"");
		else if (n <= crm_audit_max_ids && n * 21 < 1500)
		{
			const char *key = strcmp(s->object, "customer") == 0 ? "customers" : "ids";

			appendStringInfo(&d, "\"%s\": [", key);
			for (int i = 0; i < n; i++)
				appendStringInfo(&d, "%s%lld", i ? ", " : "", (long long) s->ids[i]);
			appendStringInfoChar(&d, ']');
		}
		else
		{
			uint8		h[32];
			static const char hx[] = "0123456789abcdef";

			crm_sha256(s->ids, sizeof(int64) * n, h);
			/* the range narrows whom the event may concern (who_saw: possible only inside it) */
			appendStringInfo(&d, "\"%s\": [%lld, %lld], ", strcmp(s->object, "customer") == 0 ? "customers_range" : "ids_range",
							 (long long) s->ids[0], (long long) s->ids[n - 1]);
			appendStringInfo(&d, "\"%s\": \"", strcmp(s->object, "customer") == 0 ? "customers_digest" : "ids_digest");
			for (int i = 0; i < 32; i++)
			{
				appendStringInfoChar(&d, hx[h[i] >> 4]);
				appendStringInfoChar(&d, hx[h[i] & 15]);
			}
			appendStringInfoChar(&d, '"');
		}
		appendStringInfoChar(&d, '}');
		crm_auditq_session_event("READ_SENSITIVE", s->object, n == 1 ? s->ids[0] : 0, principal, d.data);
		pfree(d.data);
	}
	foreach(lc, seen)
	{
		SeenObject *s = lfirst(lc);

		list_free_deep(s->fields);
		pfree(s->ids);
	}
	list_free_deep(seen);
	seen = NIL;
}

/*
 * The planner's mark of a managed table reference (in the plan's range table) whose sensitive
 * fields appear only as crm._saw()'s value. It is kept in a flag that PostgreSQL reads only for
 * CTE references (a WITH RECURSIVE self-reference) and copies with the entry into the plan, as
 * masking.c keeps its own mark in security_barrier. Unmarked (any plan crm did not rewrite): the
 * fields are treated as used in a condition.
 */
#define SAW_COVERED(rte) ((rte)->self_reference)

typedef struct CoverCtx
{
	int			rti;			/* the reference, at the query level marked */
	Bitmapset  *attnos;			/* its sensitive fields the actor may read unmasked somewhere */
	Oid			saw_fn;
	List	   *rtables;		/* range table of each level, the marked one first */
	int			depth;			/* levels below it */
} CoverCtx;

/* Does a sensitive field of the reference appear other than as crm._saw()'s value? */
static bool
uncovered_walker(Node *node, CoverCtx *c)
{
	if (node == NULL)
		return false;
	if (IsA(node, FuncExpr) && ((FuncExpr *) node)->funcid == c->saw_fn &&
		((FuncExpr *) node)->funcformat == COERCE_IMPLICIT_CAST && list_length(((FuncExpr *) node)->args) == 6)
	{
		FuncExpr   *f = (FuncExpr *) node;
		ListCell   *lc;

		/* the value noted is its first argument (the masking hook's: a Var); the rest are not fields */
		if (!IsA(linitial(f->args), Var) && uncovered_walker(linitial(f->args), c))
			return true;
		for_each_from(lc, f->args, 1)
			if (uncovered_walker(lfirst(lc), c))
				return true;
		return false;
	}
	if (IsA(node, Var))
	{
		Var		   *v = (Var *) node;
		int			level = c->depth - (int) v->varlevelsup;
		List	   *rtable;
		RangeTblEntry *rte;

		if (level < 0)
			return false;		/* a level above the marked one */
		rtable = (List *) list_nth(c->rtables, level);
		if (v->varno < 1 || v->varno > list_length(rtable))
			return true;		/* not a query tree's Var: assume the worst */
		rte = rt_fetch(v->varno, rtable);
		if (rte->rtekind == RTE_JOIN)
		{
			/* a merged column of JOIN ... USING: what it stands for */
			int			saved = c->depth;
			bool		r;

			c->depth = level;
			if (v->varattno <= 0 || v->varattno > list_length(rte->joinaliasvars))
				r = uncovered_walker((Node *) rte->joinaliasvars, c);
			else
				r = uncovered_walker(list_nth(rte->joinaliasvars, v->varattno - 1), c);
			c->depth = saved;
			return r;
		}
		if (level != 0 || v->varno != c->rti)
			return false;
		return v->varattno == 0 || bms_is_member(v->varattno, c->attnos);
	}
	if (IsA(node, Query))
	{
		bool		r;

		c->rtables = lappend(c->rtables, ((Query *) node)->rtable);
		c->depth++;
		r = query_tree_walker((Query *) node, uncovered_walker, (void *) c, QTW_IGNORE_JOINALIASES);
		c->depth--;
		c->rtables = list_delete_last(c->rtables);
		return r;
	}
	return expression_tree_walker(node, uncovered_walker, (void *) c);
}

/*
 * The masking hook rewrote query level q for managed table reference rti (its sub-queries first,
 * then crm._saw() around the sensitive fields of its select list and RETURNING): mark the
 * reference when every use of those fields anywhere in q is such a call.
 */
void
crm_auditread_mark(Query *q, int rti, Relation rel, CrmFieldLevels *levels, Oid saw_fn)
{
	CoverCtx	c;
	bool		uncovered;

	memset(&c, 0, sizeof(c));
	c.rti = rti;
	c.saw_fn = saw_fn;
	for (int i = 0; i < levels->nfields; i++)
	{
		CrmFieldLevel *f = &levels->fields[i];

		if (f->sensitive && f->kind != CRM_FIELD_BLIND_INDEX && (f->rank >= 2 || f->own_rank >= 2) &&
			crm_attnum_valid(RelationGetDescr(rel), f->attnum, f->name, f->atttypid))
			c.attnos = bms_add_member(c.attnos, f->attnum);
	}
	c.rtables = list_make1(q->rtable);
	uncovered = OidIsValid(saw_fn) &&
		query_tree_walker(q, uncovered_walker, (void *) &c, QTW_IGNORE_JOINALIASES);
	SAW_COVERED(rt_fetch(rti, q->rtable)) = OidIsValid(saw_fn) && !uncovered;
	list_free(c.rtables);
	bms_free(c.attnos);
}

/*
 * Sensitive fields a statement used outside crm._saw() (WHERE, join, sort key, sub-query, outer
 * reference) that the actor may read unmasked on some records: noted by object, marked as used in
 * a condition (a predicate can reveal a value as surely as a select list), without ids when
 * crm._saw() saw none. Table references whose sensitive fields were all wrapped in crm._saw()
 * (marked at planning) are left to those calls.
 */
static void
note_referenced(QueryDesc *qd)
{
	Oid			nsp = get_namespace_oid("crm_data", true);
	bool		found;
	int64		principal;
	ListCell   *lc;

	bool		pushed = false;

	if (!OidIsValid(nsp) || !IsTransactionState())
		return;
	/* a portal's ExecutorEnd may run after its snapshot was popped; lookups below need one */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	principal = crm_current_principal(&found);
	if (!found)
	{
		if (pushed)
			PopActiveSnapshot();
		return;
	}
	foreach(lc, qd->plannedstmt->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);
		Relation	rel;
		CrmFieldLevels *lv;
		bool		whole;

		if (rte->rtekind != RTE_RELATION || get_rel_namespace(rte->relid) != nsp || rte->selectedCols == NULL ||
			SAW_COVERED(rte))
			continue;
		whole = bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, rte->selectedCols);
		rel = table_open(rte->relid, NoLock);
		lv = crm_field_levels(principal, rel);
		for (int i = 0; i < lv->nfields; i++)
		{
			CrmFieldLevel *f = &lv->fields[i];

			/* (a field the table does not have now was not read) */
			if (f->sensitive && f->kind != CRM_FIELD_BLIND_INDEX && (f->rank >= 2 || f->own_rank >= 2) &&
				crm_attnum_valid(RelationGetDescr(rel), f->attnum, f->name, f->atttypid) &&
				(whole || bms_is_member(f->attnum - FirstLowInvalidHeapAttributeNumber, rte->selectedCols)))
			{
				SeenObject *so = seen_object(RelationGetRelationName(rel));
				ListCell   *fc;
				bool		have = false;

				so->condition = true;

				foreach(fc, so->fields)
					if (strcmp((char *) lfirst(fc), f->name) == 0)
						have = true;
				if (!have)
				{
					MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

					so->fields = lappend(so->fields, pstrdup(f->name));
					MemoryContextSwitchTo(old);
				}
			}
		}
		table_close(rel, NoLock);
	}
	if (pushed)
		PopActiveSnapshot();
}

/* A statement over managed tables starts (masking.c calls this for those only). */
void
crm_auditread_start(void)
{
	if (depth == 0)
		rows_out = 0;
	depth++;
}

/* ... and ends: READ_SENSITIVE for what it returned, EXPORT for copies and large results */
void
crm_auditread_end(QueryDesc *qd)
{
	bool		copy_out = qd->dest && qd->dest->mydest == DestCopyOut;
	/* rows that fill a table or materialized view are EXPORT events of copies.c, one per statement */
	bool		fill = qd->dest && (qd->dest->mydest == DestIntoRel || qd->dest->mydest == DestTransientRel);

	if (depth > 0)
		depth--;
	if (qd->estate && depth == 0)
		rows_out = qd->estate->es_processed;
	note_referenced(qd);
	if (qd->operation == CMD_SELECT && qd->estate && !fill &&
		(copy_out || (depth == 0 && qd->estate->es_processed > (uint64) crm_export_threshold)))
	{
		Oid			nsp = get_namespace_oid("crm_data", true);
		StringInfoData d;
		ListCell   *lc;
		bool		found;
		int64		principal = crm_current_principal(&found);
		int			n = 0;

		initStringInfo(&d);
		appendStringInfo(&d, "{\"how\": \"%s\", \"rows\": %llu, \"objects\": [", copy_out ? "COPY TO" : "result set",
						 (unsigned long long) qd->estate->es_processed);
		foreach(lc, qd->plannedstmt->rtable)
		{
			RangeTblEntry *rte = lfirst(lc);

			if (rte->rtekind == RTE_RELATION && get_rel_namespace(rte->relid) == nsp)
			{
				appendStringInfo(&d, "%s", n++ ? ", " : "");
				escape_json(&d, get_rel_name(rte->relid));
			}
		}
		appendStringInfoString(&d, "]}");
		crm_auditq_session_event("EXPORT", NULL, 0, found ? principal : 0, d.data);
	}
	if (depth == 0)
		emit();
}

/* The transaction ended without the statements ending (an error): what was read stays read. */
void
crm_auditread_abort(void)
{
	depth = 0;
	emit();
}
