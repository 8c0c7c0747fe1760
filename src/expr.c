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

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parse_relation.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
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

static bool
bad_function(Oid func, void *ctx)
{
	CrmFnCheck *f = ctx;

	if (!trusted_namespace(get_func_namespace(func)))
	{
		f->bad = func;
		f->untrusted = true;
		return true;
	}
	if (func_volatile(func) == PROVOLATILE_VOLATILE)
	{
		f->bad = func;
		return true;
	}
	return false;
}

/*
 * Whether an analyzed expression calls a function (directly, through an operator, a cast or a type's
 * input/output) that is volatile or neither built in nor crm's, or produces a value of a type from
 * another schema or of a domain (whose checks could run user code). Column references are what the
 * table has and are not judged. Sets fc and returns true at the first one found.
 */
bool
crm_find_bad_function(Node *node, CrmFnCheck *fc)
{
	if (node == NULL)
		return false;
	if (!IsA(node, Var))
	{
		Oid			type = exprType(node);
		HeapTuple	tp;

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
				return true;
			}
		}
	}
	if (check_functions_in_node(node, bad_function, fc))
		return true;
	return expression_tree_walker(node, crm_find_bad_function, fc);
}

static void
refuse(const char *object, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid condition for object \"%s\": %s", object, what),
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
	CrmFnCheck	fc = {InvalidOid, false, false};

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
				 errmsg("object \"%s\" does not exist", object)));

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
				 errmsg("invalid condition for object \"%s\": %s", object, ed->message),
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
						object, format_type_be(exprType((Node *) te->expr))),
				 errhint("Compare a field with a value, e.g. segment = 'private_banking'.")));
	if (crm_find_bad_function((Node *) te->expr, &fc) && fc.untrusted)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("invalid condition for object \"%s\": %s %s is neither built in nor crm's", object,
						fc.is_type ? "type" : "function",
						fc.is_type ? format_type_be(fc.bad) : format_procedure(fc.bad)),
				 errdetail("Conditions are evaluated with crm's privileges on values the caller may not see; only PostgreSQL's and crm's own functions, operators and types are allowed in them."),
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
