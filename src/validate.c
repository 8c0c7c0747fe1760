/*
 * validate.c: validating field types. Owns the checks for cn_id_number (GB 11643), uscc
 * (GB 32100), bank_card (Luhn), cn_mobile and email, the functions derived from an ID number
 * (birthday, gender), and crm.check_field(), which managed tables call from CHECK constraints
 * so that a refused value names its object, field and reason.
 */
#include "crm.h"

#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "datatype/timestamp.h"
#include "utils/timestamp.h"

static bool
all_digits(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* GB 11643 / ISO 7064 MOD 11-2 check character of the first 17 digits */
static char
cn_id_check_char(const char *s)
{
	static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
	static const char c[11] = {'1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'};
	int			sum = 0;

	for (int i = 0; i < 17; i++)
		sum += (s[i] - '0') * w[i];
	return c[sum % 11];
}

static bool
valid_province(int p)
{
	static const int codes[] = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37,
		41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83};

	for (size_t i = 0; i < lengthof(codes); i++)
		if (codes[i] == p)
			return true;
	return false;
}

static int
num(const char *s, int n)
{
	int			v = 0;

	for (int i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

static bool
real_date(int y, int m, int d)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool		leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	if (m < 1 || m > 12 || d < 1)
		return false;
	return d <= days[m - 1] + ((m == 2 && leap) ? 1 : 0);
}

static const char *
cn_id_number_problem_at(const char *s, size_t len, DateADT today)
{
	int			y, m, d;
	char		want;

	if (len != 18)
		return "an ID number has 18 characters";
	if (!all_digits(s, 17))
		return "the first 17 characters of an ID number must be digits";
	if (s[17] == 'x')
		return "the check character X must be upper-case";
	if (!(s[17] == 'X' || (s[17] >= '0' && s[17] <= '9')))
		return "the last character of an ID number must be a digit or X";
	if (!valid_province(num(s, 2)))
		return "the region code does not start with a province code";
	y = num(s + 6, 4);
	m = num(s + 10, 2);
	d = num(s + 12, 2);
	if (!real_date(y, m, d))
		return "the birth date is not a real date";
	if (y < 1900)
		return "the birth year is before 1900";
	if (date2j(y, m, d) - POSTGRES_EPOCH_JDATE > today)
		return "the birth date is in the future";
	/* the expected character is not named: it is computed from digits a reader may not see */
	want = cn_id_check_char(s);
	if (want != s[17])
		return "the check character does not match";
	return NULL;
}

static DateADT
today(void)
{
	return DatumGetDateADT(DirectFunctionCall1(timestamptz_date,
											   TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())));
}

const char *
crm_cn_id_number_problem(const char *s, size_t len)
{
	return cn_id_number_problem_at(s, len, today());
}

/* GB 32100: 18 characters from a 31-character alphabet, the last a MOD 31 check character */
const char *
crm_uscc_problem(const char *s, size_t len)
{
	static const char alphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
	static const int w[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
	static char msg[128];
	int			sum = 0, check;

	if (len != 18)
		return "a unified social credit code has 18 characters";
	for (size_t i = 0; i < 18; i++)
	{
		const char *p = (s[i] != '\0') ? strchr(alphabet, s[i]) : NULL;

		if (p == NULL)
		{
			snprintf(msg, sizeof(msg),
					 "character %d is not allowed (digits and upper-case letters except I, O, S, V, Z)",
					 (int) i + 1);
			return msg;
		}
		if (i < 17)
			sum += (int) (p - alphabet) * w[i];
	}
	check = (31 - sum % 31) % 31;
	if (alphabet[check] != s[17])
		return "the check character does not match";
	return NULL;
}

/* Luhn over 12 to 19 digits */
const char *
crm_bank_card_problem(const char *s, size_t len)
{
	int			sum = 0;

	if (len < 12 || len > 19)
		return "a bank card number has 12 to 19 digits";
	if (!all_digits(s, len))
		return "a bank card number has only digits";
	for (size_t i = 0; i < len; i++)
	{
		int			dgt = s[len - 1 - i] - '0';

		if (i % 2 == 1)
		{
			dgt *= 2;
			if (dgt > 9)
				dgt -= 9;
		}
		sum += dgt;
	}
	if (sum % 10 != 0)
		return "the Luhn check digit does not match";
	return NULL;
}

/* mainland mobile: 11 digits, 1 then 3-9 */
const char *
crm_cn_mobile_problem(const char *s, size_t len)
{
	if (len != 11 || !all_digits(s, len))
		return "a mobile number has 11 digits, without +86, spaces or dashes";
	if (s[0] != '1' || s[1] < '3')
		return "a mobile number starts with 13 to 19";
	return NULL;
}

/* a deliberately plain e-mail shape: local@domain.tld, ASCII, no spaces */
const char *
crm_email_problem(const char *s, size_t len)
{
	size_t		at = len;
	size_t		i;
	bool		dot = false;

	if (len > 254)
		return "an e-mail address has at most 254 characters";
	for (i = 0; i < len; i++)
	{
		unsigned char ch = (unsigned char) s[i];

		if (ch <= ' ' || ch >= 127 || strchr("\"(),:;<>[]\\", ch) != NULL)
			return "an e-mail address has no spaces, quotes, brackets or non-ASCII characters";
		if (ch == '@')
		{
			if (at != len)
				return "an e-mail address has exactly one @";
			at = i;
		}
	}
	if (at == len)
		return "an e-mail address has an @";
	if (at == 0 || at > 64)
		return "the part before @ has 1 to 64 characters";
	for (i = at + 1; i < len; i++)
	{
		if (s[i] == '.')
		{
			if (i == at + 1 || i == len - 1 || s[i - 1] == '.')
				return "the domain after @ has empty labels";
			dot = true;
		}
	}
	if (!dot)
		return "the domain after @ needs a dot";
	return NULL;
}

typedef const char *(*problem_fn) (const char *, size_t);

static problem_fn
validator_for(const char *type)
{
	if (strcmp(type, "cn_id_number") == 0)
		return crm_cn_id_number_problem;
	if (strcmp(type, "uscc") == 0)
		return crm_uscc_problem;
	if (strcmp(type, "bank_card") == 0)
		return crm_bank_card_problem;
	if (strcmp(type, "cn_mobile") == 0)
		return crm_cn_mobile_problem;
	if (strcmp(type, "email") == 0)
		return crm_email_problem;
	return NULL;
}

static const char *
problem_of(const char *type, text *value)
{
	problem_fn	fn = validator_for(type);

	if (fn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not a validating type", crm_short(type)),
				 errhint("Validating types are cn_id_number, uscc, bank_card, cn_mobile and email.")));
	return fn(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
}

/* SQL functions: crm.cn_id_number_valid(text), crm.uscc_valid(text), ... returns boolean */
#define VALID_FN(sqlname, fn) \
PG_FUNCTION_INFO_V1(sqlname); \
Datum \
sqlname(PG_FUNCTION_ARGS) \
{ \
	text	   *v = PG_GETARG_TEXT_PP(0); \
	PG_RETURN_BOOL(fn(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v)) == NULL); \
}
VALID_FN(crm_cn_id_number_valid, crm_cn_id_number_problem)
VALID_FN(crm_uscc_valid, crm_uscc_problem)
VALID_FN(crm_bank_card_valid, crm_bank_card_problem)
VALID_FN(crm_cn_mobile_valid, crm_cn_mobile_problem)
VALID_FN(crm_email_valid, crm_email_problem)

/* SQL function: crm.validation_problem(type text, value text) returns text (NULL when valid) */
PG_FUNCTION_INFO_V1(crm_validation_problem);
Datum
crm_validation_problem(PG_FUNCTION_ARGS)
{
	char	   *type = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *p = problem_of(type, PG_GETARG_TEXT_PP(1));

	if (p == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(p));
}

static void
refuse(const char *object, const char *field, const char *type, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("invalid %s in field %s.%s: %s", crm_short(type), crm_short(object), crm_short(field), problem)));
}

/*
 * SQL function: crm.check_field(object text, field text, type text, value text) returns boolean
 * Used in CHECK constraints of managed tables: true, or an error naming the field and reason.
 */
PG_FUNCTION_INFO_V1(crm_check_field);
Datum
crm_check_field(PG_FUNCTION_ARGS)
{
	char	   *type;
	const char *p;

	crm_require_arg(fcinfo, 0, "crm.check_field", "object");
	crm_require_arg(fcinfo, 1, "crm.check_field", "field");
	crm_require_arg(fcinfo, 2, "crm.check_field", "type");
	if (PG_ARGISNULL(3))
		PG_RETURN_BOOL(true);
	type = text_to_cstring(PG_GETARG_TEXT_PP(2));
	p = problem_of(type, PG_GETARG_TEXT_PP(3));
	if (p != NULL)
		refuse(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)), type, p);
	PG_RETURN_BOOL(true);
}

/*
 * SQL function: crm.check_picklist(object text, field text, value text, allowed text[]) returns boolean
 */
PG_FUNCTION_INFO_V1(crm_check_picklist);
Datum
crm_check_picklist(PG_FUNCTION_ARGS)
{
	text	   *value;
	ArrayType  *allowed;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	StringInfoData buf;

	crm_require_arg(fcinfo, 0, "crm.check_picklist", "object");
	crm_require_arg(fcinfo, 1, "crm.check_picklist", "field");
	crm_require_arg(fcinfo, 3, "crm.check_picklist", "allowed");
	if (PG_ARGISNULL(2))
		PG_RETURN_BOOL(true);
	value = PG_GETARG_TEXT_PP(2);
	allowed = PG_GETARG_ARRAYTYPE_P(3);
	deconstruct_array(allowed, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (!nulls[i] && DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID,
															  elems[i], PointerGetDatum(value))))
			PG_RETURN_BOOL(true);
	}
	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			continue;
		if (buf.len > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, TextDatumGetCString(elems[i]));
	}
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("invalid value %s for picklist field %s.%s",
					crm_short(quote_literal_cstr(text_to_cstring(value))),
					crm_short(text_to_cstring(PG_GETARG_TEXT_PP(0))), crm_short(text_to_cstring(PG_GETARG_TEXT_PP(1)))),
			 errdetail("Allowed values: %s.", crm_shortn(buf.data, 256))));
	PG_RETURN_BOOL(false);
}

/*
 * SQL function: crm.check_document(object text, field text, document_type text, value text) returns boolean
 * An identity document checked by its type: id_card as cn_id_number, uscc as uscc, others by shape.
 */
void
crm_check_document_value(const char *obj, const char *fld, const char *dtype, const char *s, size_t len)
{
	const char *p = NULL;

	if (dtype == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("field %s.%s has a value but its document type is missing", crm_short(obj), crm_short(fld)),
				 errhint("Set the document type (for customers: id_type) together with the number.")));
	if (strcmp(dtype, "id_card") == 0)
	{
		if ((p = crm_cn_id_number_problem(s, len)) != NULL)
			refuse(obj, fld, "cn_id_number", p);
	}
	else if (strcmp(dtype, "uscc") == 0)
	{
		if ((p = crm_uscc_problem(s, len)) != NULL)
			refuse(obj, fld, "uscc", p);
	}
	else
	{
		if (len < 5 || len > 20)
			p = "a document number has 5 to 20 characters";
		for (size_t i = 0; p == NULL && i < len; i++)
			if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
				p = "a document number has only digits and upper-case letters";
		if (p != NULL)
			refuse(obj, fld, dtype, p);
	}
}

PG_FUNCTION_INFO_V1(crm_check_document);
Datum
crm_check_document(PG_FUNCTION_ARGS)
{
	text	   *v;

	crm_require_arg(fcinfo, 0, "crm.check_document", "object");
	crm_require_arg(fcinfo, 1, "crm.check_document", "field");
	if (PG_ARGISNULL(3))
		PG_RETURN_BOOL(true);
	v = PG_GETARG_TEXT_PP(3);
	crm_check_document_value(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
							 PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)),
							 VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	PG_RETURN_BOOL(true);
}

static void
require_valid_id(text *v)
{
	const char *p = crm_cn_id_number_problem(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));

	if (p != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid cn_id_number: %s", p)));
}

/* SQL function: crm.cn_id_number_birthday(text) returns date */
PG_FUNCTION_INFO_V1(crm_cn_id_number_birthday);
Datum
crm_cn_id_number_birthday(PG_FUNCTION_ARGS)
{
	text	   *v = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(v);

	require_valid_id(v);
	PG_RETURN_DATEADT(date2j(num(s + 6, 4), num(s + 10, 2), num(s + 12, 2)) - POSTGRES_EPOCH_JDATE);
}

/* SQL function: crm.cn_id_number_gender(text) returns text: 'M' (odd 17th digit) or 'F' */
PG_FUNCTION_INFO_V1(crm_cn_id_number_gender);
Datum
crm_cn_id_number_gender(PG_FUNCTION_ARGS)
{
	text	   *v = PG_GETARG_TEXT_PP(0);

	require_valid_id(v);
	PG_RETURN_TEXT_P(cstring_to_text(((VARDATA_ANY(v)[16] - '0') % 2) ? "M" : "F"));
}

/*
 * SQL function: crm.make_cn_id_number(region text, birthday date, seq integer) returns text
 * Builds a valid number (demo and test data): 6-digit region, birth date, 3-digit sequence
 * (odd for men), check character.
 */
PG_FUNCTION_INFO_V1(crm_make_cn_id_number);
Datum
crm_make_cn_id_number(PG_FUNCTION_ARGS)
{
	char	   *region = text_to_cstring(PG_GETARG_TEXT_PP(0));
	DateADT		bd = PG_GETARG_DATEADT(1);
	int32		seq = PG_GETARG_INT32(2);
	char		buf[32];
	int			y, m, d;

	if (strlen(region) != 6 || !all_digits(region, 6) || !valid_province(num(region, 2)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid region code \"%s\"", crm_short(region)),
				 errhint("A region code is 6 digits starting with a province code, e.g. 110101.")));
	if (seq < 0 || seq > 999)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sequence %d is out of range", seq),
				 errhint("The sequence is 0 to 999.")));
	if (DATE_NOT_FINITE(bd))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("birthday must be a finite date")));
	j2date(bd + POSTGRES_EPOCH_JDATE, &y, &m, &d);
	if (y < 1900 || y > 9999)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("birthday year %d is out of range", y),
				 errhint("Birth years start at 1900.")));
	snprintf(buf, sizeof(buf), "%s%04d%02d%02d%03d", region, y, m, d, seq);
	buf[17] = cn_id_check_char(buf);
	buf[18] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(buf));
}

/*
 * SQL function: crm.make_uscc(base text) returns text
 * Appends the GB 32100 check character to a 17-character base (demo and test data).
 */
PG_FUNCTION_INFO_V1(crm_make_uscc);
Datum
crm_make_uscc(PG_FUNCTION_ARGS)
{
	static const char alphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
	static const int w[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
	char	   *base = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		buf[19];
	int			sum = 0;

	if (strlen(base) != 17)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a unified social credit code base has 17 characters, not %d", (int) strlen(base))));
	for (int i = 0; i < 17; i++)
	{
		const char *p = base[i] ? strchr(alphabet, base[i]) : NULL;

		if (p == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("character %d of \"%s\" is not allowed in a unified social credit code", i + 1, crm_short(base))));
		sum += (int) (p - alphabet) * w[i];
	}
	memcpy(buf, base, 17);
	buf[17] = alphabet[(31 - sum % 31) % 31];
	buf[18] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(buf));
}
