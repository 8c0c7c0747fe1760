/*
 * rules.c: automation. Validates rule conditions against the object's real columns and compiles
 * event rules into trigger WHEN clauses, so the executor evaluates them and a row whose condition
 * is false costs no function call; fires a rule's actions (one prepared statement per rule, run as
 * the rule's owner); runs scheduled rules set-based; renders templates for one recipient; date
 * helpers; the scheduler worker.
 *
 * A rule's actions are one SQL statement that crm.create_rule() builds from the validated
 * definition (see src/sql/45_rules.sql): for an event rule it reads the row passed as $1, for a
 * scheduled rule it claims (rule, record, occurrence) in crm.rule_fired first, so that a record
 * fires once per occurrence however often or concurrently the rule runs.
 */
#include "crm.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/regproc.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"

extern Datum crm_mask(PG_FUNCTION_ARGS);

int			crm_rule_max_depth = 8;
static char *crm_today = NULL;
static char *crm_scheduler_databases = NULL;
static int	crm_scheduler_interval = 60;

/* --- dates ---------------------------------------------------------------------------------------------- */

/* "Today" for rules and date helpers: crm.today (superuser-only, for tests) or the current date. */
DateADT
crm_today_date(void)
{
	if (crm_today != NULL && crm_today[0] != '\0')
		return DatumGetDateADT(DirectFunctionCall1(date_in, CStringGetDatum(crm_today)));
	return GetSQLCurrentDate();
}

static bool
check_today(char **newval, void **extra, GucSource source)
{
	int			y, m, d;
	char		junk;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (sscanf(*newval, "%d-%d-%d%c", &y, &m, &d, &junk) != 3 || m < 1 || m > 12 || d < 1 ||
		d > day_tab[isleap(y)][m - 1] || y < 1 || y > 9999)
	{
		GUC_check_errdetail("crm.today must be a date written YYYY-MM-DD, or empty for the current date.");
		return false;
	}
	return true;
}

/* The first date on or after "from" that has d's month and day (29 February: 28 February in common years). */
static DateADT
next_anniversary(DateADT d, DateADT from)
{
	int			y, m, dd, fy, fm, fd;
	DateADT		r = from;

	j2date(d + POSTGRES_EPOCH_JDATE, &y, &m, &dd);
	j2date(from + POSTGRES_EPOCH_JDATE, &fy, &fm, &fd);
	for (int year = fy; year <= fy + 1; year++)
	{
		int			day = (m == 2 && dd == 29 && !isleap(year)) ? 28 : dd;

		r = date2j(year, m, day) - POSTGRES_EPOCH_JDATE;
		if (r >= from)
		{
			if (!IS_VALID_DATE(r))
				ereport(ERROR,
						(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						 errmsg("date out of range: the next anniversary is past the last date PostgreSQL can store")));
			return r;
		}
	}
	return r;					/* not reached */
}

#define DATE_ARG_OK(n) (!DATE_NOT_FINITE(PG_GETARG_DATEADT(n)))

PG_FUNCTION_INFO_V1(crm_today_sql);
Datum
crm_today_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATEADT(crm_today_date());
}

static void
finite_or_error(DateADT d, const char *fn)
{
	if (DATE_NOT_FINITE(d))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s() needs a finite date, not infinity", crm_short(fn))));
}

/* crm.days_until(d date[, today date]) returns integer: d - today */
PG_FUNCTION_INFO_V1(crm_days_until);
Datum
crm_days_until(PG_FUNCTION_ARGS)
{
	DateADT		d = PG_GETARG_DATEADT(0);
	DateADT		t = PG_NARGS() > 1 ? PG_GETARG_DATEADT(1) : crm_today_date();

	finite_or_error(d, "crm.days_until");
	finite_or_error(t, "crm.days_until");
	PG_RETURN_INT32(d - t);
}

/* crm.next_anniversary(d date[, today date]) returns date */
PG_FUNCTION_INFO_V1(crm_next_anniversary);
Datum
crm_next_anniversary(PG_FUNCTION_ARGS)
{
	DateADT		d = PG_GETARG_DATEADT(0);
	DateADT		t = PG_NARGS() > 1 ? PG_GETARG_DATEADT(1) : crm_today_date();

	finite_or_error(d, "crm.next_anniversary");
	finite_or_error(t, "crm.next_anniversary");
	PG_RETURN_DATEADT(next_anniversary(d, t));
}

/* crm.days_until_anniversary(d date[, today date]) returns integer: 0 on the day, 1..366 before it */
PG_FUNCTION_INFO_V1(crm_days_until_anniversary);
Datum
crm_days_until_anniversary(PG_FUNCTION_ARGS)
{
	DateADT		d = PG_GETARG_DATEADT(0);
	DateADT		t = PG_NARGS() > 1 ? PG_GETARG_DATEADT(1) : crm_today_date();

	finite_or_error(d, "crm.days_until_anniversary");
	finite_or_error(t, "crm.days_until_anniversary");
	PG_RETURN_INT32(next_anniversary(d, t) - t);
}

/* MMDD of a date: 229 for 29 February. Immutable, so it can be indexed. */
static int32
anniversary_key(DateADT d)
{
	int			y, m, dd;

	j2date(d + POSTGRES_EPOCH_JDATE, &y, &m, &dd);
	return m * 100 + dd;
}

/* crm.anniversary_key(d date) returns integer */
PG_FUNCTION_INFO_V1(crm_anniversary_key);
Datum
crm_anniversary_key(PG_FUNCTION_ARGS)
{
	DateADT		d = PG_GETARG_DATEADT(0);

	finite_or_error(d, "crm.anniversary_key");
	PG_RETURN_INT32(anniversary_key(d));
}

/*
 * crm.anniversary_keys(days integer[, today date]) returns integer[]: the keys of the anniversaries
 * falling within the next "days" days (today included); 229 with 28 February in common years.
 * "crm.anniversary_key(birthday) = ANY (crm.anniversary_keys(7))" can use an index on the key.
 */
PG_FUNCTION_INFO_V1(crm_anniversary_keys);
Datum
crm_anniversary_keys(PG_FUNCTION_ARGS)
{
	int32		days = PG_GETARG_INT32(0);
	DateADT		t = PG_NARGS() > 1 ? PG_GETARG_DATEADT(1) : crm_today_date();
	Datum	   *keys;
	int			n = 0;

	finite_or_error(t, "crm.anniversary_keys");
	if (days < 0 || days > 366)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("crm.anniversary_keys() takes 0 to 366 days, not %d", days)));
	keys = palloc(sizeof(Datum) * (days + 2));
	for (int i = 0; i <= days; i++)
	{
		int			y, m, dd;
		int32		k = anniversary_key(t + i);

		keys[n++] = Int32GetDatum(k);
		j2date(t + i + POSTGRES_EPOCH_JDATE, &y, &m, &dd);
		if (k == 228 && !isleap(y))
			keys[n++] = Int32GetDatum(229);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(keys, n, INT4OID, 4, true, TYPALIGN_INT));
}

/* --- conditions ----------------------------------------------------------------------------------------- */

typedef struct CondCheck
{
	const char *rule;
	const char *object;
	const char *event;			/* insert, update, delete, schedule */
	const char *what;			/* "condition", "occurrence" */
	TupleDesc	desc;
} CondCheck;

static bool
has_column(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
			return true;
	}
	return false;
}

static char *
column_list(TupleDesc desc)
{
	StringInfoData s;

	initStringInfo(&s);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (a->attisdropped || strncmp(NameStr(a->attname), "crm_bidx_", 9) == 0)
			continue;
		appendStringInfo(&s, "%s%s", s.len ? ", " : "", NameStr(a->attname));
	}
	return s.data;
}

static void
unknown_field(CondCheck *c, const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("unknown field \"%s\" in the %s of %s", crm_short(name), crm_short(c->what), crm_short(c->rule)),
			 errdetail("Object \"%s\" has no field \"%s\".", crm_shortn(c->object, 256), crm_shortn(name, 256)),
			 errhint("Fields of %s: %s.", crm_shortn(c->object, 256), crm_shortn(column_list(c->desc), 256))));
}

/* Check every name the raw expression uses; qualify bare field names with NEW (OLD for delete). */
static bool
check_raw(Node *node, CondCheck *c)
{
	if (node == NULL)
		return false;
	if (IsA(node, ColumnRef))
	{
		ColumnRef  *cr = (ColumnRef *) node;
		bool		event = strcmp(c->event, "schedule") != 0;

		ListCell   *lc;

		foreach(lc, cr->fields)
			if (IsA(lfirst(lc), A_Star))
				ereport(ERROR,
						(errcode(ERRCODE_SYNTAX_ERROR),
						 errmsg("the %s of %s cannot use *", crm_short(c->what), crm_short(c->rule)),
						 errhint("Name the fields.")));
		if (list_length(cr->fields) == 1)
		{
			const char *f = strVal(linitial(cr->fields));

			if (!has_column(c->desc, f))
				unknown_field(c, f);
			if (event)
				cr->fields = lcons(makeString(pstrdup(strcmp(c->event, "delete") == 0 ? "old" : "new")), cr->fields);
			return false;
		}
		if (list_length(cr->fields) == 2 && event)
		{
			const char *q = strVal(linitial(cr->fields));
			const char *f = strVal(lsecond(cr->fields));

			if (strcmp(q, "new") == 0 || strcmp(q, "old") == 0)
			{
				if (strcmp(q, "old") == 0 && strcmp(c->event, "insert") == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
							 errmsg("the %s of insert %s cannot use OLD", crm_short(c->what), crm_short(c->rule)),
							 errdetail("A new record has no old values."),
							 errhint("Use NEW.%s or %s.", crm_shortn(f, 256), crm_shortn(f, 256))));
				if (strcmp(q, "new") == 0 && strcmp(c->event, "delete") == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
							 errmsg("the %s of delete %s cannot use NEW", crm_short(c->what), crm_short(c->rule)),
							 errdetail("A deleted record has no new values."),
							 errhint("Use OLD.%s or %s.", crm_shortn(f, 256), crm_shortn(f, 256))));
				if (!has_column(c->desc, f))
					unknown_field(c, f);
				return false;
			}
		}
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("the %s of %s names \"%s\", which is not a field of %s", crm_short(c->what), crm_short(c->rule),
						crm_short(NameListToString(cr->fields)), crm_short(c->object)),
				 event ? errhint("Name fields as field, NEW.field or OLD.field.")
				 : errhint("A scheduled rule names its object's fields directly, without a prefix.")));
	}
	if (IsA(node, SubLink))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the %s of %s cannot contain a subquery", crm_short(c->what), crm_short(c->rule)),
				 errhint("A condition is an expression over one record's fields.")));
	if (IsA(node, ParamRef))
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("the %s of %s cannot use parameters", crm_short(c->what), crm_short(c->rule))));
	if (IsA(node, FuncCall))
	{
		FuncCall   *fc = (FuncCall *) node;
		FuncCandidateList cl;

		if (fc->over != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_WINDOWING_ERROR),
					 errmsg("the %s of %s cannot use window functions", crm_short(c->what), crm_short(c->rule))));
		for (cl = FuncnameGetCandidates(fc->funcname, -1, NIL, false, false, false, true); cl; cl = cl->next)
			if (get_func_prokind(cl->oid) == PROKIND_AGGREGATE)
				ereport(ERROR,
						(errcode(ERRCODE_GROUPING_ERROR),
						 errmsg("the %s of %s cannot use aggregate function %s()", crm_short(c->what), crm_short(c->rule),
								crm_short(NameListToString(fc->funcname))),
						 errhint("A condition looks at one record at a time.")));
	}
	return raw_expression_tree_walker(node, check_raw, (void *) c);
}

typedef struct ErrCtx
{
	const char *what;
	const char *rule;
	const char *text;
} ErrCtx;

static void
cond_error_context(void *arg)
{
	ErrCtx	   *e = arg;

	errcontext("%s of %s: %s", e->what, e->rule, e->text);
}

/*
 * Parse a rule's expression: exactly one expression, nothing else (no FROM, no second statement),
 * its names checked. Returns the raw tree (bare names qualified for event rules).
 */
static Node *
parse_rule_expr(CondCheck *c, const char *text)
{
	List	   *raw;
	SelectStmt *s;
	ResTarget  *rt;

	if (text == NULL || strspn(text, " \t\r\n") == strlen(text))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s of %s is empty", crm_short(c->what), crm_short(c->rule)),
				 errhint("Give a SQL boolean expression such as aum > 1000000, or 'true'.")));
	{
		MemoryContext cxt = CurrentMemoryContext;

		PG_TRY();
		{
			raw = raw_parser(psprintf("SELECT %s\n", text), RAW_PARSE_DEFAULT);
		}
		PG_CATCH();
		{
			ErrorData  *ed;

			MemoryContextSwitchTo(cxt);
			ed = CopyErrorData();
			FlushErrorState();
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("the %s of %s is not valid SQL: %s", crm_short(c->what), crm_short(c->rule), crm_shortn(ed->message, 256)),
					 errdetail("Found: %s", crm_shortn(text, 256))));
		}
		PG_END_TRY();
	}
	if (list_length(raw) != 1 || !IsA(((RawStmt *) linitial(raw))->stmt, SelectStmt))
		goto bad;
	s = (SelectStmt *) ((RawStmt *) linitial(raw))->stmt;
	if (s->op != SETOP_NONE || s->fromClause || s->whereClause || s->groupClause || s->havingClause ||
		s->windowClause || s->distinctClause || s->intoClause || s->withClause || s->sortClause ||
		s->limitCount || s->limitOffset || s->lockingClause || s->valuesLists || list_length(s->targetList) != 1)
		goto bad;
	rt = linitial_node(ResTarget, s->targetList);
	if (rt->name != NULL || rt->val == NULL)
		goto bad;
	(void) check_raw(rt->val, c);
	return rt->val;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("the %s of %s must be a single SQL expression", crm_short(c->what), crm_short(c->rule)),
			 errdetail("Found: %s", crm_shortn(text, 256)),
			 errhint("No FROM, no second statement, no alias: an expression over the record's fields.")));
	return NULL;
}

/* Transform against the object's table (NEW/OLD for event rules, "t" for scheduled ones) and check it. */
static Node *
transform_rule_expr(CondCheck *c, Node *raw, Relation rel, bool want_bool)
{
	ParseState *ps = make_parsestate(NULL);
	Node	   *node;
	CrmFnCheck	fc = {InvalidOid, false, false, NULL, InvalidOid};
	bool		event = strcmp(c->event, "schedule") != 0;

	if (event)
	{
		ParseNamespaceItem *o = addRangeTableEntryForRelation(ps, rel, AccessShareLock, makeAlias("old", NIL), false, false);
		ParseNamespaceItem *n = addRangeTableEntryForRelation(ps, rel, AccessShareLock, makeAlias("new", NIL), false, false);

		addNSItemToQuery(ps, o, false, true, true);
		addNSItemToQuery(ps, n, false, true, true);
		node = transformExpr(ps, copyObject(raw), EXPR_KIND_TRIGGER_WHEN);
	}
	else
	{
		ParseNamespaceItem *t = addRangeTableEntryForRelation(ps, rel, AccessShareLock, makeAlias("t", NIL), false, true);

		addNSItemToQuery(ps, t, false, true, true);
		node = transformExpr(ps, copyObject(raw), EXPR_KIND_WHERE);
	}
	assign_expr_collations(ps, node);
	if (want_bool && exprType(node) != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the %s of %s must be boolean, not %s", crm_short(c->what), crm_short(c->rule), crm_short(format_type_be(exprType(node)))),
				 errhint("Compare the value, e.g. NEW.aum < OLD.aum * 0.7.")));
	if (contain_agg_clause(node) || contain_window_function(node))
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("the %s of %s cannot use aggregate functions", crm_short(c->what), crm_short(c->rule))));
	if (crm_find_bad_function(node, &fc) && fc.untrusted)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the %s of %s %s", crm_short(c->what), crm_short(c->rule), crm_bad_function_text(&fc)),
				 errdetail("Conditions run with crm's privileges; only PostgreSQL's and crm's own functions are allowed in them."),
				 errhint("Use a \"call\" action for your own function: it runs with your privileges.")));
	if (OidIsValid(fc.bad))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("the %s of %s calls volatile function %s()", crm_short(c->what), crm_short(c->rule),
						crm_short(get_func_name(fc.bad))),
				 errdetail("A rule's %s must give the same answer for the same record.", crm_shortn(c->what, 256)),
				 errhint("Use stable or immutable functions (e.g. crm.days_until(), crm.today()).")));

	/*
	 * An event rule's condition is the trigger's WHEN clause: PostgreSQL evaluates it in the writer's
	 * session, under the writer's time zone and settings. Only what no setting changes belongs there.
	 */
	if (event && contain_mutable_functions(node))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("the %s of event %s depends on the date, the time or the session's settings",
						crm_short(c->what), crm_short(c->rule)),
				 errdetail("An event rule's condition is evaluated in the session of whoever writes the record, which chooses its own time zone."),
				 errhint("Compare the record's own values (NEW.aum < OLD.aum * 0.7), or use a scheduled rule for dates and times.")));
	return node;
}

static Relation
open_object(const char *object)
{
	Oid			nsp = get_namespace_oid("crm_data", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(object, nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("object \"%s\" does not exist", crm_short(object)),
				 errhint("See crm.object for the objects there are.")));
	return table_open(relid, AccessShareLock);
}

/*
 * SQL function: crm._rule_expr(rule text, object text, event text, what text, expr text, want_bool boolean)
 * returns text: the expression checked; for scheduled rules, as SQL over alias t; for event
 * rules, as the trigger's WHEN clause will hold it.
 */
PG_FUNCTION_INFO_V1(crm_rule_expr);
Datum
crm_rule_expr(PG_FUNCTION_ARGS)
{
	CondCheck	c;
	char	   *src;
	Relation	rel;
	Node	   *raw, *node;
	ErrorContextCallback cb;
	ErrCtx		ec;
	char	   *out;
	int			nest;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(5))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("crm._rule_expr: only the expression may be NULL")));
	c.rule = text_to_cstring(PG_GETARG_TEXT_PP(0));
	/* a rule's name, or a label such as 'workflow "loan"' */
	c.rule = strchr(c.rule, ' ') ? c.rule : psprintf("rule \"%s\"", c.rule);
	c.object = text_to_cstring(PG_GETARG_TEXT_PP(1));
	c.event = text_to_cstring(PG_GETARG_TEXT_PP(2));
	c.what = text_to_cstring(PG_GETARG_TEXT_PP(3));
	src = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	rel = open_object(c.object);
	c.desc = RelationGetDescr(rel);
	ec.what = c.what;
	ec.rule = c.rule;
	ec.text = src ? src : "";
	cb.callback = cond_error_context;
	cb.arg = &ec;
	cb.previous = error_context_stack;
	error_context_stack = &cb;
	/* parsed and written back in a fixed environment: the text means the same wherever it runs */
	nest = crm_pin_search_path("pg_catalog, pg_temp");
	raw = parse_rule_expr(&c, src);
	node = transform_rule_expr(&c, raw, rel, PG_GETARG_BOOL(5));
	error_context_stack = cb.previous;
	if (strcmp(c.event, "schedule") == 0)
		out = deparse_expression(node, deparse_context_for("t", RelationGetRelid(rel)), true, false);
	else
		out = src;				/* crm._rule_trigger parses it again */
	crm_unpin_search_path(nest);
	table_close(rel, AccessShareLock);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * SQL function: crm._rule_trigger(rule text, object text, event text, condition text) returns text
 * (Re)creates trigger crm_rule_<rule> on crm_data.<object>: AFTER <event> FOR EACH ROW WHEN
 * (<condition>) EXECUTE FUNCTION crm._rule_fire(<rule>). NULL condition: drop it only. Returns
 * the trigger's definition.
 */
PG_FUNCTION_INFO_V1(crm_rule_trigger);
Datum
crm_rule_trigger(PG_FUNCTION_ARGS)
{
	char	   *rule, *object, *event, *tgname;
	Relation	rel;
	Oid			relid;
	CreateTrigStmt *st;
	ObjectAddress addr;
	char	   *def;
	int			nest;

	crm_require_arg(fcinfo, 0, "crm._rule_trigger", "rule");
	crm_require_arg(fcinfo, 1, "crm._rule_trigger", "object");
	crm_require_arg(fcinfo, 2, "crm._rule_trigger", "event");
	rule = text_to_cstring(PG_GETARG_TEXT_PP(0));
	object = text_to_cstring(PG_GETARG_TEXT_PP(1));
	event = text_to_cstring(PG_GETARG_TEXT_PP(2));
	tgname = psprintf("crm_rule_%s", rule);
	if (strlen(tgname) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("rule name \"%s\" is too long", crm_short(rule)),
				 errdetail("A rule's trigger is named crm_rule_<rule>, at most %d bytes.", NAMEDATALEN - 1)));
	rel = open_object(object);
	relid = RelationGetRelid(rel);
	table_close(rel, AccessShareLock);
	crm_drop_trigger(relid, tgname);
	if (PG_ARGISNULL(3))
		PG_RETURN_NULL();
	if (strcmp(event, "insert") != 0 && strcmp(event, "update") != 0 && strcmp(event, "delete") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rule \"%s\": a trigger is made only for the events insert, update and delete, not \"%s\"",
						crm_short(rule), crm_short(event))));
	st = makeNode(CreateTrigStmt);
	st->trigname = tgname;
	st->relation = makeRangeVar("crm_data", object, -1);
	st->funcname = list_make2(makeString("crm"), makeString("_rule_fire"));
	st->args = list_make1(makeString(rule));
	st->row = true;
	st->timing = 0;				/* AFTER */
	st->events = strcmp(event, "insert") == 0 ? TRIGGER_TYPE_INSERT :
		strcmp(event, "update") == 0 ? TRIGGER_TYPE_UPDATE : TRIGGER_TYPE_DELETE;
	{
		CondCheck	c;
		ErrorContextCallback cb;
		ErrCtx		ec;
		Relation	r = open_object(object);

		c.rule = psprintf("rule \"%s\"", rule);
		c.object = object;
		c.event = event;
		c.what = "condition";
		c.desc = RelationGetDescr(r);
		ec.what = c.what;
		ec.rule = c.rule;
		ec.text = text_to_cstring(PG_GETARG_TEXT_PP(3));
		cb.callback = cond_error_context;
		cb.arg = &ec;
		cb.previous = error_context_stack;
		error_context_stack = &cb;
		nest = crm_pin_search_path("pg_catalog, pg_temp");
		st->whenClause = parse_rule_expr(&c, ec.text);
		(void) transform_rule_expr(&c, st->whenClause, r, true);
		error_context_stack = cb.previous;
		table_close(r, AccessShareLock);
	}
	addr = CreateTrigger(st, "crm.create_rule()", relid, InvalidOid, InvalidOid, InvalidOid, InvalidOid,
						 InvalidOid, NULL, false, false);
	crm_unpin_search_path(nest);
	CommandCounterIncrement();
	def = TextDatumGetCString(DirectFunctionCall1(pg_get_triggerdef, ObjectIdGetDatum(addr.objectId)));
	PG_RETURN_TEXT_P(cstring_to_text(def));
}

/* --- firing --------------------------------------------------------------------------------------------- */

typedef struct RuleEntry
{
	char		name[NAMEDATALEN];
	uint64		generation;
	bool		exists;
	bool		enabled;
	int64		owner;
	char	   *statement;
	Oid			rowtype;
	SPIPlanPtr	plan;
	int			busy;
} RuleEntry;

static HTAB *rule_cache = NULL;
static uint64 rule_generation = 1;
static int	rule_depth = 0;

void
crm_rules_reset(void)
{
	rule_generation++;
}

static RuleEntry *
rule_entry(const char *name, Oid rowtype)
{
	RuleEntry  *e;
	bool		found;
	char		key[NAMEDATALEN];

	if (rule_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(RuleEntry);
		rule_cache = hash_create("crm rules", 32, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	memset(key, 0, sizeof(key));
	strlcpy(key, name, NAMEDATALEN);
	e = hash_search(rule_cache, key, HASH_ENTER, &found);
	if (!found)
	{
		e->generation = 0;
		e->statement = NULL;
		e->plan = NULL;
		e->busy = 0;
	}
	if (e->generation != rule_generation || e->rowtype != rowtype)
	{
		Oid			types[1] = {TEXTOID};
		Datum		vals[1] = {CStringGetTextDatum(name)};
		Datum		out[3];
		bool		outnull[3];

		crm_watch_catalogs();
		if (e->plan != NULL && e->busy == 0)
			SPI_freeplan(e->plan);
		e->plan = NULL;
		if (e->statement)
			pfree(e->statement);
		e->statement = NULL;
		e->exists = crm_query_row_as_owner("SELECT r.statement, r.owner_principal, r.enabled FROM crm.rule r"
										   " WHERE r.name OPERATOR(pg_catalog.=) $1",
										   1, types, vals, out, outnull, 3);
		if (e->exists)
		{
			e->statement = MemoryContextStrdup(TopMemoryContext, TextDatumGetCString(out[0]));
			e->owner = outnull[1] ? 0 : DatumGetInt64(out[1]);
			e->enabled = DatumGetBool(out[2]);
		}
		e->rowtype = rowtype;
		e->generation = rule_generation;
	}
	return e;
}

/* Run a rule's statement as the rule's owner; returns its single bigint result. */
static int64
run_statement(RuleEntry *e, const char *name, int nargs, Oid *types, Datum *vals)
{
	CrmUserSwitch sw;
	volatile int64 result = 0;
	volatile bool pushed = false;

	if (rule_depth >= crm_rule_max_depth)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("rule \"%s\" fired %d rules deep: its actions keep triggering rules", crm_short(name), rule_depth),
				 errdetail("Rules whose actions change records that fire them again (directly or through other rules) form a cycle."),
				 errhint("Make the condition false once the action has run, or raise crm.rule_max_depth.")));
	crm_switch_to_owner(&sw);
	rule_depth++;
	e->busy++;
	PG_TRY();
	{
		if (e->owner != 0)
		{
			crm_push_principal(e->owner);
			pushed = true;
		}
		SPI_connect();
		if (e->plan == NULL)
		{
			SPIPlanPtr	p = SPI_prepare_cursor(e->statement, nargs, types, CURSOR_OPT_GENERIC_PLAN);

			if (p == NULL)
				elog(ERROR, "rule \"%s\": its statement could not be prepared: %s", name, SPI_result_code_string(SPI_result));
			SPI_keepplan(p);
			e->plan = p;
		}
		if (SPI_execute_plan(e->plan, vals, NULL, false, 0) < 0)
			elog(ERROR, "rule \"%s\": its statement failed", name);
		if (SPI_processed == 1 && SPI_tuptable != NULL)
		{
			bool		isnull;
			Datum		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				result = DatumGetInt64(v);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		if (pushed)
			crm_pop_principal();
		e->busy--;
		rule_depth--;
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	return result;
}

/* Trigger function crm._rule_fire(rule): the executor has already found the WHEN condition true. */
PG_FUNCTION_INFO_V1(crm_rule_fire);
Datum
crm_rule_fire(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	const char *name;
	HeapTuple	tup;
	Relation	rel;
	RuleEntry  *e;
	Oid			types[2];
	Datum		vals[2];

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) || td->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm._rule_fire() must be called as a row trigger with the rule's name")));
	/* a blind-index rebuild (bidxkey.c) changes no business value: nothing to react to */
	if (crm_bidx_rebuilding)
		return PointerGetDatum(NULL);
	name = td->tg_trigger->tgargs[0];
	rel = td->tg_relation;
	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	e = rule_entry(name, rel->rd_rel->reltype);
	if (!e->exists || !e->enabled)
		return PointerGetDatum(NULL);
	types[0] = rel->rd_rel->reltype;
	types[1] = TEXTOID;
	vals[0] = heap_copy_tuple_as_datum(tup, RelationGetDescr(rel));
	vals[1] = CStringGetTextDatum(name);
	(void) run_statement(e, name, 2, types, vals);
	return PointerGetDatum(NULL);
}

/* SQL function: crm._run_rule(rule text) returns bigint: records fired by one scheduled run. */
PG_FUNCTION_INFO_V1(crm_run_rule);
Datum
crm_run_rule(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	RuleEntry  *e = rule_entry(name, InvalidOid);
	Oid			types[1] = {TEXTOID};
	Datum		vals[1] = {CStringGetTextDatum(name)};

	if (!e->exists)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("rule \"%s\" does not exist", crm_short(name))));
	PG_RETURN_INT64(run_statement(e, name, 1, types, vals));
}

/* --- templates ------------------------------------------------------------------------------------------ */

typedef struct FieldMeta
{
	char		name[NAMEDATALEN];
	bool		sensitive;
	bool		encrypted;
	char		mask[NAMEDATALEN];
} FieldMeta;

/* crm.field rows of one object, read once per transaction */
static FieldMeta *
field_meta(const char *object, int *n)
{
	static LocalTransactionId at = InvalidLocalTransactionId;
	static char obj[NAMEDATALEN];
	static FieldMeta *meta = NULL;
	static int	nmeta = 0;

	if (at != MyProc->lxid || strcmp(obj, object) != 0)
	{
		CrmUserSwitch sw;
		Oid			types[1] = {TEXTOID};
		Datum		vals[1] = {CStringGetTextDatum(object)};

		crm_switch_to_owner(&sw);
		PG_TRY();
		{
			SPI_connect();
			if (SPI_execute_with_args("SELECT f.name, f.sensitivity OPERATOR(pg_catalog.=) 'sensitive', f.encrypted, f.mask"
									  " FROM crm.field f WHERE f.object OPERATOR(pg_catalog.=) $1",
									  1, types, vals, NULL, true, 0) != SPI_OK_SELECT)
				elog(ERROR, "crm: could not read the fields of %s", object);
			if (meta)
				pfree(meta);
			meta = MemoryContextAllocZero(TopMemoryContext, sizeof(FieldMeta) * (SPI_processed + 1));
			nmeta = (int) SPI_processed;
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	t = SPI_tuptable->vals[i];
				TupleDesc	d = SPI_tuptable->tupdesc;
				bool		isnull;
				char	   *m;

				strlcpy(meta[i].name, SPI_getvalue(t, d, 1), NAMEDATALEN);
				meta[i].sensitive = DatumGetBool(SPI_getbinval(t, d, 2, &isnull));
				meta[i].encrypted = DatumGetBool(SPI_getbinval(t, d, 3, &isnull));
				m = SPI_getvalue(t, d, 4);
				strlcpy(meta[i].mask, m ? m : "", NAMEDATALEN);
			}
			SPI_finish();
		}
		PG_FINALLY();
		{
			crm_restore_user(&sw);
		}
		PG_END_TRY();
		strlcpy(obj, object, NAMEDATALEN);
		at = MyProc->lxid;
	}
	*n = nmeta;
	return meta;
}

static char *
apply_mask(const char *value, const char *mask)
{
	LOCAL_FCINFO(fc, 2);
	Datum		r;

	if (mask == NULL || mask[0] == '\0')
		mask = "full";
	if (strcmp(mask, "hidden") == 0)
		return "[hidden]";
	InitFunctionCallInfoData(*fc, NULL, 2, InvalidOid, NULL, NULL);
	fc->args[0].value = CStringGetTextDatum(value);
	fc->args[0].isnull = false;
	fc->args[1].value = CStringGetTextDatum(mask);
	fc->args[1].isnull = false;
	r = crm_mask(fc);
	return fc->isnull ? "[hidden]" : TextDatumGetCString(r);
}

/*
 * SQL function: crm._render(template text, object text, rec jsonb, owner bigint, recipient bigint,
 * kind text) returns text. Replaces {{field}} by the record's value as the recipient may see it:
 * for a principal, by its field levels on this record (hidden fields as [hidden], masked ones
 * masked); for a customer, sensitive and encrypted fields masked.
 */
PG_FUNCTION_INFO_V1(crm_render);
Datum
crm_render(PG_FUNCTION_ARGS)
{
	char	   *tpl;
	char	   *object;
	Jsonb	   *rec;
	int64		owner = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3);
	int64		recipient = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);
	bool		to_customer = !PG_ARGISNULL(5) && strcmp(text_to_cstring(PG_GETARG_TEXT_PP(5)), "customer") == 0;
	StringInfoData out;
	const char *p;
	Relation	rel = NULL;
	CrmFieldLevels *levels = NULL;
	FieldMeta  *meta = NULL;
	int			nmeta = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	tpl = text_to_cstring(PG_GETARG_TEXT_PP(0));
	object = text_to_cstring(PG_GETARG_TEXT_PP(1));
	rec = PG_GETARG_JSONB_P(2);
	p = tpl;
	initStringInfo(&out);
	while (*p)
	{
		const char *open = strstr(p, "{{");
		const char *close;
		char	   *name;
		JsonbValue	k, *v;
		char	   *value = NULL;
		FieldMeta  *fm = NULL;

		if (open == NULL || (close = strstr(open + 2, "}}")) == NULL)
		{
			appendStringInfoString(&out, p);
			break;
		}
		appendBinaryStringInfo(&out, p, open - p);
		p = close + 2;
		{
			const char *a = open + 2, *b = close;

			while (a < b && isspace((unsigned char) *a))
				a++;
			while (b > a && isspace((unsigned char) b[-1]))
				b--;
			name = pnstrdup(a, b - a);
		}
		if (meta == NULL)
		{
			meta = field_meta(object, &nmeta);
			rel = open_object(object);
			if (!to_customer && recipient != 0)
				levels = crm_field_levels(recipient, rel);
		}
		for (int i = 0; i < nmeta; i++)
			if (strcmp(meta[i].name, name) == 0)
				fm = &meta[i];
		k.type = jbvString;
		k.val.string.val = name;
		k.val.string.len = strlen(name);
		v = findJsonbValueFromContainer(&rec->root, JB_FOBJECT, &k);
		if (v == NULL || v->type == jbvNull)
			continue;
		if (v->type == jbvString)
			value = pnstrdup(v->val.string.val, v->val.string.len);
		else if (v->type == jbvNumeric)
			value = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		else if (v->type == jbvBool)
			value = v->val.boolean ? "true" : "false";
		else
			value = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		if (fm && fm->encrypted)
			value = crm_crypt_plaintext(rel, name, (struct varlena *) cstring_to_text(value));
		if (value == NULL)
			continue;
		if (to_customer)
		{
			if (fm && (fm->sensitive || fm->encrypted))
				value = apply_mask(value, fm->mask);
		}
		else if (recipient == 0)
			value = fm ? apply_mask(value, fm->mask) : value;	/* nobody in particular: masked */
		else if (levels != NULL)
		{
			for (int i = 0; i < levels->nfields; i++)
				if (strcmp(levels->fields[i].name, name) == 0)
				{
					int			rank = owner == recipient ? levels->fields[i].own_rank : levels->fields[i].rank;

					if (rank == 0)
						value = "[hidden]";
					else if (rank == 1)
						value = apply_mask(value, levels->fields[i].mask);
				}
		}
		appendStringInfoString(&out, value);
	}
	if (rel)
		table_close(rel, AccessShareLock);
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}

/* --- the scheduler -------------------------------------------------------------------------------------- */

PGDLLEXPORT void crm_scheduler_main(Datum arg);
PGDLLEXPORT void crm_scheduler_db_main(Datum arg);

static void
run_db(const char *db)
{
	if (!crm_run_db_worker("crm_scheduler_db_main", "crm scheduler run", db))
		ereport(LOG, (errmsg("crm scheduler: no background worker slot free for database \"%s\"", crm_short(db)),
					  errhint("Raise max_worker_processes.")));
}

/* The launcher: every crm.scheduler_interval seconds, one short-lived run per listed database. */
void
crm_scheduler_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	while (!ShutdownRequestPending)
	{
		char	   *list;
		List	   *dbs = NIL;
		ListCell   *lc;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) crm_scheduler_interval * 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (ShutdownRequestPending || crm_scheduler_databases == NULL || crm_scheduler_databases[0] == '\0')
			continue;
		list = pstrdup(crm_scheduler_databases);
		if (!SplitIdentifierString(list, ',', &dbs))
		{
			ereport(LOG, (errmsg("crm scheduler: crm.scheduler_databases is not a list of database names")));
			continue;
		}
		foreach(lc, dbs)
		{
			if (ShutdownRequestPending)
				break;
			run_db((const char *) lfirst(lc));
		}
		list_free(dbs);
		pfree(list);
	}
	proc_exit(0);
}

/* One run in one database: crm.run_due(), which records each rule's errors on the rule. */
void
crm_scheduler_db_main(Datum arg)
{
	char		db[NAMEDATALEN];

	strlcpy(db, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(db, NULL, 0);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "SELECT crm.run_due()");
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace"
					" WHERE n.nspname OPERATOR(pg_catalog.=) 'crm' AND p.proname OPERATOR(pg_catalog.=) 'run_due'", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		(void) SPI_execute("SELECT crm.run_due()", false, 0);
	else
		ereport(LOG, (errmsg("crm scheduler: database \"%s\" has no crm.run_due(); is crm installed there?", crm_short(db))));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

void
crm_scheduler_init(void)
{
	BackgroundWorker w;

	DefineCustomStringVariable("crm.today", "The date rules and date helpers take as today (tests only); empty: the current date.",
							   NULL, &crm_today, "", PGC_SUSET, 0, check_today, NULL, NULL);
	DefineCustomIntVariable("crm.rule_max_depth", "How deep rules may fire rules before the statement is refused (a cycle).",
							NULL, &crm_rule_max_depth, 8, 1, 100, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("crm.scheduler_databases", "Databases whose due scheduled rules the crm scheduler runs (comma-separated).",
							   NULL, &crm_scheduler_databases, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("crm.scheduler_interval", "Seconds between the crm scheduler's runs.",
							NULL, &crm_scheduler_interval, 60, 1, 86400, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 5;
	strlcpy(w.bgw_library_name, "crm", BGW_MAXLEN);
	strlcpy(w.bgw_function_name, "crm_scheduler_main", BGW_MAXLEN);
	strlcpy(w.bgw_name, "crm scheduler", BGW_MAXLEN);
	strlcpy(w.bgw_type, "crm scheduler", BGW_MAXLEN);
	RegisterBackgroundWorker(&w);
}

/* SQL function: crm._outer_user() returns name: the user outside any SECURITY DEFINER function */
PG_FUNCTION_INFO_V1(crm_outer_user);
Datum
crm_outer_user(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(GetOuterUserId(), false))));
}

/*
 * SQL function: crm._rule_call(fn regprocedure, record_id bigint, definer name) returns void
 * The "call" action: the function runs as the role that defined the rule (never as crm's owner),
 * with that role's privileges checked now, and crm's masking in force.
 */
PG_FUNCTION_INFO_V1(crm_rule_call);
Datum
crm_rule_call(PG_FUNCTION_ARGS)
{
	Oid			fn;
	Oid			role;
	Oid			save_user;
	int			save_sec;
	int			save_depth = crm_internal_depth;
	volatile int nest = 0;
	FmgrInfo	fi;

	crm_require_arg(fcinfo, 0, "crm._rule_call", "fn");
	crm_require_arg(fcinfo, 2, "crm._rule_call", "definer");
	fn = PG_GETARG_OID(0);
	role = get_role_oid(NameStr(*PG_GETARG_NAME(2)), false);
	if (PG_ARGISNULL(1))
		PG_RETURN_VOID();
	if (pg_proc_aclcheck(fn, role, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", crm_short(format_procedure(fn))),
				 errdetail("A rule's call action runs as the role that defined the rule, %s.", crm_shortn(NameStr(*PG_GETARG_NAME(2)), 256))));
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	crm_internal_depth = 0;
	PG_TRY();
	{
		LOCAL_FCINFO(fc, 1);

		/* the caller's search_path must not reach into what runs as another role */
		nest = crm_pin_search_path(CRM_SAFE_SEARCH_PATH);

		fmgr_info(fn, &fi);
		InitFunctionCallInfoData(*fc, &fi, 1, InvalidOid, NULL, NULL);
		fc->args[0].value = PG_GETARG_DATUM(1);
		fc->args[0].isnull = false;
		(void) FunctionCallInvoke(fc);
	}
	PG_FINALLY();
	{
		crm_unpin_search_path(nest);
		crm_internal_depth = save_depth;
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}
