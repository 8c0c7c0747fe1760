/*
 * names.c: names that users give to objects, fields and roles. Owns crm.check_name(), which the
 * definition API calls before it builds any SQL, so a bad name is refused before anything exists.
 */
#include "crm.h"

#include "common/keywords.h"
#include "utils/builtins.h"

#define CRM_NAME_MAX 48			/* leaves room for derived names within NAMEDATALEN */

/* SQL function: crm.check_name(kind text, name text) returns text (the name, when it is good) */
PG_FUNCTION_INFO_V1(crm_check_name);
Datum
crm_check_name(PG_FUNCTION_ARGS)
{
	char	   *kind = PG_ARGISNULL(0) ? "object" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *name;
	size_t		len;
	int			kw;

	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s name must not be empty", crm_short(kind))));
	name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	len = strlen(name);

	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) name[i];

		if (c >= 0x80)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s name %s", crm_short(kind), crm_short(quote_literal_cstr(name))),
					 errdetail("The name contains a non-ASCII character at byte %d.", (int) i + 1),
					 errhint("Use lower-case ASCII letters, digits and underscores, starting with a letter; put the display text in the label.")));
		if (!((c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '_'))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s name %s", crm_short(kind), crm_short(quote_literal_cstr(name))),
					 errdetail("Character %d (%s) is not allowed there.", (int) i + 1,
							   crm_shortn(quote_literal_cstr(pnstrdup(name + i, 1)), 256)),
					 errhint("Use lower-case ASCII letters, digits and underscores, starting with a letter; put the display text in the label.")));
	}
	if (len > CRM_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("%s name \"%s\" is too long", crm_short(kind), crm_short(name)),
				 errdetail("Names have at most %d characters.", CRM_NAME_MAX)));
	if (strncmp(name, "pg_", 3) == 0 || strncmp(name, "crm_", 4) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("%s name \"%s\" is reserved", crm_short(kind), crm_short(name)),
				 errdetail("Names starting with pg_ or crm_ are reserved for the system.")));
	kw = ScanKeywordLookup(name, &ScanKeywords);
	if (kw >= 0 && ScanKeywordCategories[kw] != UNRESERVED_KEYWORD)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("%s name \"%s\" is a reserved SQL word", crm_short(kind), crm_short(name)),
				 errhint("Choose another name, e.g. \"%s_%s\".", crm_shortn(name, 256), crm_shortn(strcmp(kind, "field") == 0 ? "value" : "item", 256))));
	PG_RETURN_TEXT_P(cstring_to_text(name));
}
