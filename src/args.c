/*
 * args.c: arguments of SQL-callable functions. crm_require_arg() refuses a NULL argument that a
 * function cannot do without, naming it; crm_short() cuts a user's value before it goes into an
 * error message (a 1 MB argument must not come back as a 1 MB message).
 */
#include "postgres.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "crm.h"


void
crm_require_arg(FunctionCallInfo fcinfo, int argno, const char *func, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument %s of %s must not be null", argname, func)));
}

/* s itself when it has at most n characters, else its first n characters and "..." */
const char *
crm_shortn(const char *s, int n)
{
	size_t		len;
	int			cut;

	if (s == NULL)
		return "(null)";
	len = strlen(s);
	if (len <= (size_t) n)
		return s;
	cut = pg_mbcharcliplen(s, (int) Min(len, (size_t) 4 * n), n);
	if ((size_t) cut >= len)
		return s;
	return psprintf("%.*s...", cut, s);
}

/* for a value in an error message: its first 64 characters */
const char *
crm_short(const char *s)
{
	return crm_shortn(s, 64);
}

/* SQL function: crm._short(value anyelement) returns text: crm_short() of the value's text, for RAISE */
PG_FUNCTION_INFO_V1(crm_short_sql);
Datum
crm_short_sql(PG_FUNCTION_ARGS)
{
	Oid			type = get_fn_expr_argtype(fcinfo->flinfo, 0);
	Oid			out;
	bool		isvarlena;

	if (!OidIsValid(type))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not determine the type of the argument of crm._short")));
	getTypeOutputInfo(type, &out, &isvarlena);
	PG_RETURN_TEXT_P(cstring_to_text(crm_short(OidOutputFunctionCall(out, PG_GETARG_DATUM(0)))));
}
