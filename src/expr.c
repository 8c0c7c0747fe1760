/*
 * expr.c: SQL conditions that admins write over a record (ethical walls now; rules and workflow
 * guards later). Owns crm.check_condition(), which refuses anything but one boolean expression over
 * the object's own columns: no subqueries, aggregates, window or set-returning functions, volatile
 * functions, other tables, statement separators or comments.
 */
#include "crm.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parse_relation.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

static void
refuse(const char *object, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid condition for object \"%s\": %s", crm_short(object), what),
			 errhint("A condition is one boolean SQL expression over the object's fields, e.g. segment = 'private_banking'.")));
}

/* SQL function: crm.check_condition(object text, condition text) returns text (the condition) */
PG_FUNCTION_INFO_V1(crm_check_condition);
Datum
crm_check_condition(PG_FUNCTION_ARGS)
{
	char	   *object;
	char	   *cond;
	StringInfoData sql;
	List	   *volatile raw = NIL;
	RawStmt    *rs;
	Query	   *volatile q = NULL;
	TargetEntry *te;
	RangeTblEntry *rte;
	Oid			nsp, relid;
	MemoryContext oldcxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("object and condition must not be NULL")));
	object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	cond = text_to_cstring(PG_GETARG_TEXT_PP(1));
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
	if (contain_volatile_functions((Node *) te->expr))
		refuse(object, "volatile functions (such as random() or now()-changing ones) are not allowed");
	PG_RETURN_TEXT_P(cstring_to_text(cond));
}
