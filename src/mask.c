/*
 * mask.c: masking functions. Each format is a C function users can call too; they work on
 * characters, not bytes (UTF-8 safe), keep NULL as NULL and an empty string empty, and never
 * reveal more of a short value than of a long one.
 */
#include "crm.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

/* byte offsets of each character of s (len bytes); returns the number of characters */
static int
char_offsets(const char *s, int len, int **offs)
{
	int			n = 0;
	int		   *o = palloc(sizeof(int) * (len + 1));

	for (int i = 0; i < len; i += pg_mblen(s + i))
		o[n++] = i;
	o[n] = len;
	*offs = o;
	return n;
}

static void
append_stars(StringInfo buf, int n)
{
	for (int i = 0; i < n; i++)
		appendStringInfoChar(buf, '*');
}

/* keep the first `head` and last `tail` characters when at least `min` characters, star the rest */
static text *
keep_ends(text *t, int head, int tail, int min)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	int		   *o;
	int			n = char_offsets(s, len, &o);
	StringInfoData buf;

	initStringInfo(&buf);
	if (n < min)
	{
		/* too short to show anything safely, or its length: four stars */
		if (n > 0)
			append_stars(&buf, 4);
	}
	else
	{
		appendBinaryStringInfo(&buf, s, o[head]);
		append_stars(&buf, n - head - tail);
		appendBinaryStringInfo(&buf, s + o[n - tail], len - o[n - tail]);
	}
	return cstring_to_text_with_len(buf.data, buf.len);
}

/* SQL function: crm.mask_id_number(text) returns text: 110101********1234 */
PG_FUNCTION_INFO_V1(crm_mask_id_number);
Datum
crm_mask_id_number(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(keep_ends(PG_GETARG_TEXT_PP(0), 6, 4, 15));
}

/* SQL function: crm.mask_mobile(text) returns text: 138****5678 */
PG_FUNCTION_INFO_V1(crm_mask_mobile);
Datum
crm_mask_mobile(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(keep_ends(PG_GETARG_TEXT_PP(0), 3, 4, 11));
}

/*
 * SQL function: crm.mask_name(text) returns text
 * Each word keeps its first character: 张三 -> 张*, 张三丰 -> 张**, John Smith -> J*** S****.
 * A one-character word is starred entirely.
 */
PG_FUNCTION_INFO_V1(crm_mask_name);
Datum
crm_mask_name(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	StringInfoData buf;
	int			i = 0;

	initStringInfo(&buf);
	while (i < len)
	{
		if (s[i] == ' ' || s[i] == '\t')
		{
			appendStringInfoChar(&buf, s[i]);
			i++;
			continue;
		}
		{
			int			start = i, nchars = 0, first = pg_mblen(s + i);

			while (i < len && s[i] != ' ' && s[i] != '\t')
			{
				i += pg_mblen(s + i);
				nchars++;
			}
			if (nchars == 1)
				appendStringInfoChar(&buf, '*');
			else
			{
				appendBinaryStringInfo(&buf, s + start, first);
				append_stars(&buf, nchars - 1);
			}
		}
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/* SQL function: crm.mask_email(text) returns text: z***@example.com */
PG_FUNCTION_INFO_V1(crm_mask_email);
Datum
crm_mask_email(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	const char *at = memchr(s, '@', len);
	StringInfoData buf;

	initStringInfo(&buf);
	if (len == 0)
		PG_RETURN_TEXT_P(cstring_to_text(""));
	if (at == NULL || at == s)
		PG_RETURN_TEXT_P(cstring_to_text("****"));
	appendBinaryStringInfo(&buf, s, pg_mblen(s));
	appendStringInfoString(&buf, "***");
	appendBinaryStringInfo(&buf, at, len - (at - s));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/* SQL function: crm.mask_bank_card(text) returns text: 6222 **** **** 1234 (length hidden) */
PG_FUNCTION_INFO_V1(crm_mask_bank_card);
Datum
crm_mask_bank_card(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	StringInfoData buf;

	if (len == 0)
		PG_RETURN_TEXT_P(cstring_to_text(""));
	if (len < 12)
		PG_RETURN_TEXT_P(cstring_to_text("****"));
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, s, 4);
	appendStringInfoString(&buf, " **** **** ");
	appendBinaryStringInfo(&buf, s + len - 4, 4);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/* SQL function: crm.mask_full(text) returns text: **** (empty stays empty) */
PG_FUNCTION_INFO_V1(crm_mask_full);
Datum
crm_mask_full(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0 ? "" : "****"));
}

/*
 * SQL function: crm.mask(value text, mask text) returns text
 * Applies a mask by name: none, full, id_number, mobile, name, email, bank_card, hidden (NULL).
 */
PG_FUNCTION_INFO_V1(crm_mask);
Datum
crm_mask(PG_FUNCTION_ARGS)
{
	char	   *kind;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	kind = PG_ARGISNULL(1) ? "full" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strcmp(kind, "none") == 0)
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	if (strcmp(kind, "hidden") == 0)
		PG_RETURN_NULL();
	if (strcmp(kind, "id_number") == 0)
		return crm_mask_id_number(fcinfo);
	if (strcmp(kind, "mobile") == 0)
		return crm_mask_mobile(fcinfo);
	if (strcmp(kind, "name") == 0)
		return crm_mask_name(fcinfo);
	if (strcmp(kind, "email") == 0)
		return crm_mask_email(fcinfo);
	if (strcmp(kind, "bank_card") == 0)
		return crm_mask_bank_card(fcinfo);
	if (strcmp(kind, "full") == 0)
		return crm_mask_full(fcinfo);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown mask \"%s\"", crm_short(kind)),
			 errhint("Masks are none, full, id_number, mobile, name, email, bank_card and hidden.")));
	PG_RETURN_NULL();
}
