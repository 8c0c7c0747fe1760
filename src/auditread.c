/*
 * auditread.c: auditing reads. The masking hook wraps each reference to a `sensitive` field that
 * the acting principal may read unmasked, in the select lists and RETURNING lists of its queries,
 * in crm._saw(value, object, field, record id, owner, own_only): it passes the value through and
 * notes the record. When the outermost statement over managed tables ends (or its transaction
 * aborts: a read that happened stays a read), one READ_SENSITIVE event per object goes to the audit
 * queue with the field names, the row count and the record ids (or, beyond crm.audit_max_ids, their
 * count and a digest). COPY ... TO and result sets over crm.export_threshold rows are EXPORT events.
 */
#include "crm.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/sha2.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/primnodes.h"
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
 * Sensitive fields a statement referenced anywhere (select list, WHERE, join, sub-query, outer
 * reference) that the actor may read unmasked on some records: noted by object, without ids when
 * crm._saw() saw none (a predicate can reveal a value as surely as a select list).
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

		if (rte->rtekind != RTE_RELATION || get_rel_namespace(rte->relid) != nsp || rte->selectedCols == NULL)
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
