/*
 * args.c: arguments of SQL-callable functions. crm_require_arg() refuses a NULL argument that a
 * function cannot do without, naming it; crm_short() cuts a user's value before it goes into an
 * error message (a 1 MB argument must not come back as a 1 MB message).
 */
#include "postgres.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "crm.h"

#define CRM_SHORT_CHARS 64

void
crm_require_arg(FunctionCallInfo fcinfo, int argno, const char *func, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument %s of %s must not be null", argname, func)));
}

/* s itself when it has at most 64 characters, else its first 64 characters and "..." */
const char *
crm_short(const char *s)
{
	size_t		len;
	int			cut;

	if (s == NULL)
		return "(null)";
	len = strlen(s);
	if (len <= CRM_SHORT_CHARS)
		return s;
	cut = pg_mbcharcliplen(s, (int) Min(len, (size_t) 4 * CRM_SHORT_CHARS), CRM_SHORT_CHARS);
	if ((size_t) cut >= len)
		return s;
	return psprintf("%.*s...", cut, s);
}
