/*
 * expr.c: SQL conditions that admins write over a record (ethical walls, and the function check that
 * rule conditions and workflow guards share). A condition is one boolean expression over the
 * object's own columns: no subqueries, aggregates, window or set-returning functions, volatile
 * functions, other tables, statement separators or comments, and nothing but PostgreSQL's and crm's
 * own functions, operators and types. It is parsed with search_path pinned to pg_catalog, pg_temp
 * (the caller's schemas, and pg_temp's functions, are never searched) and compiled to a canonical
 * SQL text (crm_condition_sql) that resolves to the same built-in and crm objects wherever it is
 * evaluated: walls run it with crm's rights on real values, so no user-defined code may see them.
 */
#include "crm.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_cast.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parse_relation.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

/* where admins' conditions are parsed and deparsed: crm's functions must be named crm.f() */
#define CONDITION_SEARCH_PATH "pg_catalog, pg_temp"

static bool
trusted_namespace(Oid nsp)
{
	return nsp == PG_CATALOG_NAMESPACE || nsp == get_namespace_oid("crm", true);
}

/*
 * crm's functions a condition may call: date helpers, validators, masks and who is acting. crm's
 * internals (crm._*) and everything that reads data (find, churn_score, ...) are not among them:
 * conditions run with the rights of crm's owner.
 */
static const char *const crm_condition_functions[] = {
	"acting_as", "anniversary_key", "anniversary_keys", "bank_card_valid", "cn_id_number_birthday",
	"cn_id_number_gender", "cn_id_number_valid", "cn_mobile_valid", "current_principal", "days_until",
	"days_until_anniversary", "email_valid", "has_consent", "mask", "mask_bank_card", "mask_email",
	"mask_full", "mask_id_number", "mask_mobile", "mask_name", "next_anniversary", "today",
	"uscc_valid", "validation_problem"
};

/* stable built-ins a condition may call besides operators and casts: time and its formatting */
static const char *const stable_builtins[] = {
	"age", "date_part", "date_trunc", "now", "statement_timestamp", "timezone", "to_char", "to_date",
	"to_timestamp", "transaction_timestamp"
};

static bool
in_list(const char *name, const char *const *list, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return true;
	return false;
}

/* whether a function implements an operator or a cast (scanned: conditions are compiled rarely) */
static bool
operator_or_cast(Oid func)
{
	static const struct
	{
		Oid			rel;
		AttrNumber	att;
	}			where[2] = {{OperatorRelationId, Anum_pg_operator_oprcode}, {CastRelationId, Anum_pg_cast_castfunc}};
	bool		found = false;

	for (int i = 0; i < 2 && !found; i++)
	{
		Relation	rel = table_open(where[i].rel, AccessShareLock);
		ScanKeyData key;
		SysScanDesc scan;

		ScanKeyInit(&key, where[i].att, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(func));
		scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
		found = HeapTupleIsValid(systable_getnext(scan));
		systable_endscan(scan);
		table_close(rel, AccessShareLock);
	}
	return found;
}

/*
 * Conditions run with crm's owner's rights on real values, so what they may call is a list, not
 * "whatever is not volatile": immutable built-ins; stable built-ins that implement an operator or a
 * cast (date against timestamptz, ...) or handle time (now(), to_char(), ...), never those that run
 * queries or read the server's state (table_to_xml(), current_setting(), pg_stat_*) or follow a
 * setting the reader chooses (text search by default_text_search_config); and crm's own helpers
 * above. Volatile functions are refused too. (Time zones: crm_pin_search_path() evaluates in the
 * server's.)
 */
static bool
bad_function(Oid func, void *ctx)
{
	CrmFnCheck *f = ctx;
	HeapTuple	tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(func));
	Form_pg_proc p;
	bool		bad = false;

	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for function %u", func);
	p = (Form_pg_proc) GETSTRUCT(tp);
	if (!trusted_namespace(p->pronamespace))
	{
		f->untrusted = true;
		f->why = "is neither built in nor crm's";
		bad = true;
	}
	else if (p->provolatile == PROVOLATILE_VOLATILE)
	{
		f->why = "is volatile";
		bad = true;
	}
	else if (p->pronamespace != PG_CATALOG_NAMESPACE)
		bad = !in_list(NameStr(p->proname), crm_condition_functions, lengthof(crm_condition_functions));
	else if (p->provolatile == PROVOLATILE_STABLE)
		bad = strncmp(NameStr(p->proname), "pg_", 3) == 0 || strstr(NameStr(p->proname), "xml") != NULL ||
			/* text search without a configuration follows the reader's default_text_search_config */
			strncmp(NameStr(p->proname), "ts_", 3) == 0 || strstr(NameStr(p->proname), "tsquery") != NULL ||
			strstr(NameStr(p->proname), "tsvector") != NULL ||
			!(in_list(NameStr(p->proname), stable_builtins, lengthof(stable_builtins)) || operator_or_cast(func));
	if (bad && f->why == NULL)
	{
		f->untrusted = true;
		f->why = "is not one of the functions conditions may use";
	}
	ReleaseSysCache(tp);
	if (bad)
		f->bad = func;
	return bad;
}

/*
 * An operator is named in the compiled text: one from another schema would be looked up by that
 * name again, so whoever owns its schema could swap in another function behind it. Operators of
 * pg_catalog and crm only (whatever function implements them).
 */
static bool
bad_operator(Oid opno, CrmFnCheck *fc)
{
	HeapTuple	tp = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	bool		bad;

	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	bad = !trusted_namespace(((Form_pg_operator) GETSTRUCT(tp))->oprnamespace);
	if (bad)
	{
		fc->bad = ((Form_pg_operator) GETSTRUCT(tp))->oprcode;
		fc->untrusted = true;
		fc->is_operator = opno;
		fc->why = "is neither built in nor crm's";
	}
	ReleaseSysCache(tp);
	return bad;
}

static bool
bad_operators(Node *node, CrmFnCheck *fc)
{
	ListCell   *lc;

	switch (nodeTag(node))
	{
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			return bad_operator(((OpExpr *) node)->opno, fc);
		case T_ScalarArrayOpExpr:
			return bad_operator(((ScalarArrayOpExpr *) node)->opno, fc);
		case T_RowCompareExpr:
			foreach(lc, ((RowCompareExpr *) node)->opnos)
				if (bad_operator(lfirst_oid(lc), fc))
					return true;
			return false;
		default:
			return false;
	}
}

/* node types whose result type is judged: what can produce a value of a domain or foreign type */
static bool
typed_node(Node *node)
{
	switch (nodeTag(node))
	{
		case T_Const:
		case T_FuncExpr:
		case T_OpExpr:
		case T_CoerceViaIO:
		case T_CoerceToDomain:
		case T_RelabelType:
		case T_ArrayCoerceExpr:
		case T_ConvertRowtypeExpr:
		case T_RowExpr:
		case T_ArrayExpr:
		case T_CaseExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_FieldSelect:
			return true;
		default:
			return false;
	}
}

/*
 * Whether an analyzed expression calls a function (directly, through an operator, a cast or a type's
 * input/output) that conditions may not use (see bad_function), or produces a value of a type from
 * another schema or of a domain (whose checks could run user code). Column references are what the
 * table has and are not judged. Sets fc and returns true at the first one found.
 */
bool
crm_find_bad_function(Node *node, CrmFnCheck *fc)
{
	if (node == NULL)
		return false;
	if (IsA(node, XmlExpr))
	{
		/* XML parsing of record values as crm's owner: nothing a condition needs */
		fc->bad = XMLOID;
		fc->untrusted = true;
		fc->is_type = true;
		fc->why = "conditions may not use";
		return true;
	}
	if (typed_node(node))
	{
		Oid			type = exprType(node);
		HeapTuple	tp;

		/* names looked up in the catalogs at run time (regclass, regproc, ...): not for conditions */
		if (type == REGCLASSOID || type == REGPROCOID || type == REGPROCEDUREOID || type == REGOPEROID ||
			type == REGOPERATOROID || type == REGTYPEOID || type == REGCONFIGOID || type == REGDICTIONARYOID ||
			type == REGNAMESPACEOID || type == REGROLEOID || type == REGCOLLATIONOID || type == XMLOID)
		{
			fc->bad = type;
			fc->untrusted = true;
			fc->is_type = true;
			fc->why = "conditions may not use";
			return true;
		}

		if (OidIsValid(type) && (tp = SearchSysCache1(TYPEOID, ObjectIdGetDatum(type))) != NULL)
		{
			Form_pg_type t = (Form_pg_type) GETSTRUCT(tp);
			bool		bad = !trusted_namespace(t->typnamespace) || t->typtype == TYPTYPE_DOMAIN;

			ReleaseSysCache(tp);
			if (bad)
			{
				fc->bad = type;
				fc->untrusted = true;
				fc->is_type = true;
				fc->why = "is neither built in nor crm's, or is a domain";
				return true;
			}
		}
	}
	if (check_functions_in_node(node, bad_function, fc))
		return true;
	if (bad_operators(node, fc))
		return true;
	return expression_tree_walker(node, crm_find_bad_function, fc);
}

/* "calls f(args), which ..." / "uses type t, which ...": for the callers' messages */
char *
crm_bad_function_text(CrmFnCheck *fc)
{
	if (OidIsValid(fc->is_operator))
		return psprintf("uses operator %s, which %s", format_operator(fc->is_operator), fc->why);
	if (fc->is_type)
		return psprintf("uses type %s, which %s", format_type_be(fc->bad), fc->why);
	return psprintf("calls %s, which %s", format_procedure(fc->bad), fc->why);
}

static void
refuse(const char *object, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid condition for object \"%s\": %s", crm_short(object), what),
			 errhint("A condition is one boolean SQL expression over the object's fields, e.g. segment = 'private_banking'.")));
}

/*
 * Parse and check a condition over crm_data.<object> (search_path must be pinned by the caller).
 * Returns the analyzed expression; *relid is the object's table.
 */
static Node *
compile(const char *object, const char *cond, Oid *relid_out)
{
	StringInfoData sql;
	List	   *volatile raw = NIL;
	RawStmt    *rs;
	Query	   *volatile q = NULL;
	TargetEntry *te;
	RangeTblEntry *rte;
	Oid			nsp, relid;
	MemoryContext oldcxt = CurrentMemoryContext;
	CrmFnCheck	fc = {InvalidOid, false, false, NULL, InvalidOid};

	if (strspn(cond, " \t\r\n") == strlen(cond))
		refuse(object, "the condition is empty");
	if (strchr(cond, ';') != NULL)
		refuse(object, "a semicolon is not allowed");
	if (strstr(cond, "--") != NULL || strstr(cond, "/*") != NULL)
		refuse(object, "comments are not allowed");

	nsp = get_namespace_oid("crm_data", true);
	relid = OidIsValid(nsp) ? get_relname_relid(object, nsp) : InvalidOid;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("object \"%s\" does not exist", crm_short(object))));

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT (%s) FROM crm_data.%s", cond, quote_identifier(object));

	/*
	 * Parser errors (syntax, unknown field, unknown function) are re-raised naming the object;
	 * the error is re-thrown at once, so the aborting transaction releases what parsing held.
	 */
	PG_TRY();
	{
		raw = raw_parser(sql.data, RAW_PARSE_DEFAULT);
		if (list_length(raw) != 1)
			refuse(object, "it is not a single expression");
		rs = linitial_node(RawStmt, raw);
		q = parse_analyze_fixedparams(rs, sql.data, NULL, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(oldcxt);
		ed = CopyErrorData();
		FlushErrorState();
		if (strncmp(ed->message, "invalid condition", 17) == 0)
			ReThrowError(ed);
		ereport(ERROR,
				(errcode(ed->sqlerrcode),
				 errmsg("invalid condition for object \"%s\": %s", crm_short(object), crm_shortn(ed->message, 256)),
				 errhint("A condition is one boolean SQL expression over the object's fields, e.g. segment = 'private_banking'.")));
	}
	PG_END_TRY();

	if (q->commandType != CMD_SELECT || list_length(q->rtable) != 1 || list_length(q->targetList) != 1)
		refuse(object, "it must be an expression over this object only");
	rte = linitial_node(RangeTblEntry, q->rtable);
	if (rte->rtekind != RTE_RELATION || rte->relid != relid)
		refuse(object, "it must be an expression over this object only");
	if (q->hasSubLinks)
		refuse(object, "subqueries are not allowed");
	if (q->hasAggs)
		refuse(object, "aggregates are not allowed");
	if (q->hasWindowFuncs)
		refuse(object, "window functions are not allowed");
	if (q->hasTargetSRFs)
		refuse(object, "set-returning functions are not allowed");
	if (q->groupClause || q->havingQual || q->sortClause || q->limitCount || q->distinctClause ||
		q->jointree->quals)
		refuse(object, "it must be an expression over this object only");
	te = linitial_node(TargetEntry, q->targetList);
	if (exprType((Node *) te->expr) != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("invalid condition for object \"%s\": it is of type %s, not boolean",
						crm_short(object), crm_short(format_type_be(exprType((Node *) te->expr)))),
				 errhint("Compare a field with a value, e.g. segment = 'private_banking'.")));
	if (crm_find_bad_function((Node *) te->expr, &fc) && fc.untrusted)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("invalid condition for object \"%s\": it %s", crm_short(object), crm_bad_function_text(&fc)),
				 errdetail("Conditions are evaluated with crm's privileges on values the caller may not see; only PostgreSQL's operators, casts and immutable functions, its time functions and crm's date helpers, validators and masks are allowed in them."),
				 errhint("Name crm's functions with their schema, e.g. crm.days_until(kyc_expires_on) < 30.")));
	if (contain_volatile_functions((Node *) te->expr))
		refuse(object, "volatile functions (such as random() or now()-changing ones) are not allowed");
	*relid_out = relid;
	return (Node *) te->expr;
}

/*
 * A condition compiled to canonical SQL over alias "t": names and operators resolved in
 * pg_catalog and crm when it was checked, written so that they resolve to the same objects under
 * search_path pg_catalog, pg_temp or pg_catalog, crm, pg_temp (crm's code pins one of the two).
 */
char *
crm_condition_sql(const char *object, const char *cond)
{
	int			nest = crm_pin_search_path(CONDITION_SEARCH_PATH);
	Oid			relid;
	Node	   *expr = compile(object, cond, &relid);
	char	   *out = deparse_expression(expr, deparse_context_for("t", relid), true, false);

	crm_unpin_search_path(nest);
	return out;
}

/* SQL function: crm.check_condition(object text, condition text) returns text (the condition) */
PG_FUNCTION_INFO_V1(crm_check_condition);
Datum
crm_check_condition(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("object and condition must not be NULL")));
	(void) crm_condition_sql(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_TEXT_P(PG_GETARG_TEXT_PP(1));
}

/*
 * SQL function: crm._condition_sql(object text, condition text) returns text
 * The compiled form of a condition (see crm_condition_sql), for crm's PL/pgSQL that evaluates walls.
 */
PG_FUNCTION_INFO_V1(crm_condition_sql_fn);
Datum
crm_condition_sql_fn(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("object and condition must not be NULL")));
	PG_RETURN_TEXT_P(cstring_to_text(crm_condition_sql(text_to_cstring(PG_GETARG_TEXT_PP(0)),
													   text_to_cstring(PG_GETARG_TEXT_PP(1)))));
}

/*
 * SQL function: crm._condition_holds(object text, record_id bigint, condition text) returns boolean
 * Whether a compiled condition (crm._rule_expr's or crm._condition_sql's output, over alias t)
 * holds for a record, evaluated as crm's owner with the environment pinned. Not granted: crm's
 * SECURITY DEFINER workflow functions call it with the compiled text they stored.
 */
PG_FUNCTION_INFO_V1(crm_condition_holds);
Datum
crm_condition_holds(PG_FUNCTION_ARGS)
{
	char	   *object;
	Oid			nsp = get_namespace_oid("crm_data", true);
	Oid			types[1] = {INT8OID};
	Datum		vals[1];
	Datum		out[1];
	bool		outnull[1];

	crm_require_arg(fcinfo, 0, "crm._condition_holds", "object");
	crm_require_arg(fcinfo, 1, "crm._condition_holds", "record_id");
	crm_require_arg(fcinfo, 2, "crm._condition_holds", "condition");
	object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid(object, nsp)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("object \"%s\" does not exist", crm_short(object))));
	vals[0] = PG_GETARG_DATUM(1);
	if (!crm_query_row_as_owner(psprintf("SELECT EXISTS (SELECT 1 FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $1 AND (%s))",
										 quote_identifier(object), text_to_cstring(PG_GETARG_TEXT_PP(2))),
								1, types, vals, out, outnull, 1) || outnull[0])
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(DatumGetBool(out[0]));
}
