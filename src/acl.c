/*
 * acl.c: record-level access. Owns the functions behind every managed table's row-level security
 * policies: for the acting principal, an object and a privilege, the owners, org units and record
 * ids whose records it may reach. Policies compare indexed columns with these arrays
 * (owner_id = ANY (crm.acl_owners(...))), so the planner keeps index scans, and the arrays are
 * computed once per principal, object and privilege, not per row.
 *
 * The answers are cached per backend across transactions and dropped by crm.c's invalidation
 * callback whenever principals, roles, grants, shares, org units, objects or walls change. Shares that expire drop
 * the cache entry when their time passes. Without shared_preload_libraries everything is denied.
 */
#include "crm.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define ACL_OBJECT_LEN 64

typedef enum AclPriv
{
	PRIV_READ, PRIV_CREATE, PRIV_EDIT, PRIV_DELETE, NPRIV
} AclPriv;
static const char *const priv_names[NPRIV] = {"read", "create", "edit", "delete"};

typedef struct AclKey
{
	int64		principal;		/* 0: nobody */
	int			priv;
	char		object[ACL_OBJECT_LEN];
} AclKey;

typedef struct AclEntry
{
	AclKey		key;
	ArrayType  *owners;			/* in acl_cxt */
	ArrayType  *units;
	ArrayType  *records;
	TimestampTz valid_until;	/* earliest expiry of a share it used; DT_NOEND if none */
} AclEntry;

static HTAB *acl_cache = NULL;
static MemoryContext acl_cxt = NULL;

static HTAB *wall_cache;

static uint64 acl_generation = 1;	/* bumped by every reset: call-site caches check it */

void
crm_acl_reset(void)
{
	acl_generation++;
	wall_cache = NULL;			/* allocated in acl_cxt */
	acl_cache = NULL;
	/* a reset can come while an entry is computed or used: retire the memory, do not free it */
	crm_cache_retire(&acl_cxt);
}

static void
acl_init_cache(void)
{
	HASHCTL		ctl;

	if (acl_cache == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(AclKey);
		ctl.entrysize = sizeof(AclEntry);
		ctl.hcxt = crm_cache_context(&acl_cxt, "crm access cache");
		acl_cache = hash_create("crm access cache", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
}

static int
parse_priv(text *t)
{
	char	   *s = text_to_cstring(t);

	for (int i = 0; i < NPRIV; i++)
		if (strcmp(s, priv_names[i]) == 0)
			return i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown privilege \"%s\"", crm_short(s)),
			 errhint("Privileges are read, create, edit and delete.")));
	return -1;
}

/* Run one fixed query returning a single bigint[] (NULL/absent: empty), copied into cxt. */
static ArrayType *
spi_array(const char *sql, int nargs, Oid *argtypes, Datum *values, MemoryContext cxt)
{
	ArrayType  *result = NULL;
	int			rc = SPI_execute_with_args(sql, nargs, argtypes, values, NULL, true, 1);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "crm access query failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			result = DatumGetArrayTypePCopy(d);
			MemoryContextSwitchTo(old);
		}
	}
	if (result == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		result = construct_empty_array(INT8OID);
		MemoryContextSwitchTo(old);
	}
	return result;
}

/*
 * The scopes a principal holds for (object, privilege), through its CRM roles; grants on '*'
 * apply to every object. Then the owners, units and shared records they open.
 */
static void
acl_compute(AclEntry *e, MemoryContext cxt)
{
	CrmUserSwitch sw;
	Oid			types3[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		vals3[3];

	vals3[0] = Int64GetDatum(e->key.principal);
	vals3[1] = CStringGetTextDatum(e->key.object);
	vals3[2] = CStringGetTextDatum(priv_names[e->key.priv]);
	e->valid_until = DT_NOEND;
	crm_watch_catalogs();

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		SPI_connect();

		/* owners: oneself at any scope, plus reports (transitively) at team scope */
		e->owners = spi_array(
			"WITH s AS (SELECT g.scope FROM crm.object_grant g JOIN crm.principal_role pr ON pr.role OPERATOR(pg_catalog.=) g.role"
			"           JOIN crm.principal me ON me.id OPERATOR(pg_catalog.=) pr.principal_id AND me.active"
			"           WHERE pr.principal_id OPERATOR(pg_catalog.=) $1 AND g.object OPERATOR(pg_catalog.=) ANY (ARRAY[$2, '*'::pg_catalog.text]) AND g.privilege OPERATOR(pg_catalog.=) $3)"
			" SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM s) THEN NULL"
			"             WHEN EXISTS (SELECT 1 FROM s WHERE s.scope OPERATOR(pg_catalog.=) 'team') THEN"
			"               (WITH RECURSIVE r(id) AS (SELECT $1 UNION SELECT p.id FROM crm.principal p JOIN r ON p.manager_id OPERATOR(pg_catalog.=) r.id)"
			"                SELECT pg_catalog.array_agg(r.id ORDER BY r.id) FROM r)"
			"             ELSE ARRAY[$1] END",
			3, types3, vals3, cxt);

		/* units: the subtree of one's unit at org_unit scope; every unit at all scope or by sharing */
		e->units = spi_array(
			"WITH s AS (SELECT g.scope FROM crm.object_grant g JOIN crm.principal_role pr ON pr.role OPERATOR(pg_catalog.=) g.role"
			"           WHERE pr.principal_id OPERATOR(pg_catalog.=) $1 AND g.object OPERATOR(pg_catalog.=) ANY (ARRAY[$2, '*'::pg_catalog.text]) AND g.privilege OPERATOR(pg_catalog.=) $3),"
			"     me AS (SELECT p.org_unit_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1 AND p.active),"
			"     sh AS (SELECT o.sharing FROM crm.object o WHERE o.name OPERATOR(pg_catalog.=) $2)"
			" SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM me) THEN NULL"
			"   WHEN EXISTS (SELECT 1 FROM s WHERE s.scope OPERATOR(pg_catalog.=) 'all')"
			"     OR ($3 OPERATOR(pg_catalog.=) 'read' AND EXISTS (SELECT 1 FROM sh WHERE sh.sharing OPERATOR(pg_catalog.=) ANY ('{public_read,public_read_write}'::pg_catalog.text[])))"
			"     OR ($3 OPERATOR(pg_catalog.=) 'edit' AND EXISTS (SELECT 1 FROM sh WHERE sh.sharing OPERATOR(pg_catalog.=) 'public_read_write'))"
			"   THEN (SELECT pg_catalog.array_agg(u.id ORDER BY u.id) FROM crm.org_unit u)"
			"   ELSE (SELECT pg_catalog.array_agg(x ORDER BY x) FROM ("
			"           SELECT b.id AS x FROM (WITH RECURSIVE b(id) AS (SELECT me.org_unit_id FROM me"
			"                  UNION SELECT u.id FROM crm.org_unit u JOIN b ON u.parent_id OPERATOR(pg_catalog.=) b.id) SELECT b.id FROM b) b"
			"            WHERE EXISTS (SELECT 1 FROM s WHERE s.scope OPERATOR(pg_catalog.=) 'org_unit')"
			"           UNION SELECT me.org_unit_id FROM me"
			"            WHERE $3 OPERATOR(pg_catalog.=) 'read' AND EXISTS (SELECT 1 FROM sh WHERE sh.sharing OPERATOR(pg_catalog.=) 'org_unit')) y)"
			"   END",
			3, types3, vals3, cxt);

		/* records shared with the principal or with its unit or a unit above it, not expired */
		if (e->key.priv == PRIV_READ || e->key.priv == PRIV_EDIT)
		{
			e->records = spi_array(
				"WITH RECURSIVE up(id) AS (SELECT p.org_unit_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1 AND p.active"
				"                          UNION SELECT u.parent_id FROM crm.org_unit u JOIN up ON u.id OPERATOR(pg_catalog.=) up.id WHERE u.parent_id IS NOT NULL)"
				" SELECT pg_catalog.array_agg(DISTINCT s.record_id) FROM crm.record_share s"
				"  WHERE s.object OPERATOR(pg_catalog.=) $2 AND (s.access OPERATOR(pg_catalog.=) 'edit' OR $3 OPERATOR(pg_catalog.=) 'read')"
				"    AND (s.expires_at IS NULL OR s.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp())"
				"    AND (s.principal_id OPERATOR(pg_catalog.=) $1 OR s.org_unit_id OPERATOR(pg_catalog.=) ANY (SELECT up.id FROM up))"
				"    AND EXISTS (SELECT 1 FROM up)",
				3, types3, vals3, cxt);
			if (SPI_execute_with_args(
					"WITH RECURSIVE up(id) AS (SELECT p.org_unit_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1"
					"                          UNION SELECT u.parent_id FROM crm.org_unit u JOIN up ON u.id OPERATOR(pg_catalog.=) up.id WHERE u.parent_id IS NOT NULL)"
					" SELECT pg_catalog.min(s.expires_at) FROM crm.record_share s"
					"  WHERE s.object OPERATOR(pg_catalog.=) $2 AND s.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()"
					"    AND (s.principal_id OPERATOR(pg_catalog.=) $1 OR s.org_unit_id OPERATOR(pg_catalog.=) ANY (SELECT up.id FROM up))",
					2, types3, vals3, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
			{
				bool		isnull;
				Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

				if (!isnull)
					e->valid_until = DatumGetTimestampTz(d);
			}
		}
		else
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			e->records = construct_empty_array(INT8OID);
			MemoryContextSwitchTo(old);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
}

static AclEntry *
acl_lookup(int64 principal, const char *object, int priv)
{
	AclKey		key;
	AclEntry   *e;
	bool		found;

	if (strlen(object) >= ACL_OBJECT_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("object name \"%s\" is too long", crm_short(object))));
	acl_init_cache();
	memset(&key, 0, sizeof(key));
	key.principal = principal;
	key.priv = priv;
	strlcpy(key.object, object, ACL_OBJECT_LEN);

	e = hash_search(acl_cache, &key, HASH_FIND, &found);
	if (found && e->valid_until > GetCurrentStatementStartTimestamp())
		return e;
	if (found)
	{
		/* a share it relied on has expired */
		hash_search(acl_cache, &key, HASH_REMOVE, NULL);
	}

	{
		/* compute into a temporary entry first, so an error leaves no half-made entry */
		AclEntry	tmp;
		AclEntry   *n;
		uint64		generation = acl_generation;

		memset(&tmp, 0, sizeof(tmp));
		tmp.key = key;
		if (principal == 0)
		{
			MemoryContext old = MemoryContextSwitchTo(acl_cxt);

			tmp.owners = construct_empty_array(INT8OID);
			tmp.units = construct_empty_array(INT8OID);
			tmp.records = construct_empty_array(INT8OID);
			tmp.valid_until = DT_NOEND;
			MemoryContextSwitchTo(old);
		}
		else
			acl_compute(&tmp, acl_cxt);
		/* the callback reset the cache while we ran queries: what we computed is stale, again */
		if (generation != acl_generation)
			return acl_lookup(principal, object, priv);
		acl_init_cache();
		n = hash_search(acl_cache, &key, HASH_ENTER, &found);
		*n = tmp;
		return n;
	}
}

static AclEntry *
acl_for_current(PG_FUNCTION_ARGS)
{
	bool		found;
	int64		principal = 0;
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			priv = parse_priv(PG_GETARG_TEXT_PP(1));

	/* fail closed: without the preloaded library (hooks off), nobody reaches any record */
	if (crm_is_preloaded)
	{
		principal = crm_current_principal(&found);
		if (!found)
			principal = 0;
	}
	return acl_lookup(principal, object, priv);
}

static Datum
copy_out(ArrayType *a)
{
	return PointerGetDatum(DatumGetArrayTypePCopy(PointerGetDatum(a)));
}

/*
 * Row security calls these once per row: each call site (FmgrInfo) keeps its last answer for the
 * same statement, principal, arguments and cache generation, so that rows after the first cost a few
 * comparisons instead of a hash lookup and an array copy. The array lives in the call site's memory
 * context (not the per-tuple one, so it outlives the row) and is flat: no caller changes it in place.
 */
typedef struct AclCallCache
{
	uint64		generation;
	int64		principal;
	bool		principal_found;
	TimestampTz statement;
	char		object[ACL_OBJECT_LEN];
	char		priv[16];
	Datum		value;
} AclCallCache;

static Datum
acl_call(FunctionCallInfo fcinfo, int which)
{
	AclCallCache *c = (AclCallCache *) fcinfo->flinfo->fn_extra;
	text	   *obj = PG_GETARG_TEXT_PP(0);
	text	   *prv = PG_GETARG_TEXT_PP(1);
	bool		found = false;
	int64		principal = crm_is_preloaded ? crm_current_principal(&found) : 0;
	AclEntry   *e;
	ArrayType  *a;
	MemoryContext old;

	if (c != NULL && c->generation == acl_generation && c->principal == principal && c->principal_found == found &&
		c->statement == GetCurrentStatementStartTimestamp() &&
		VARSIZE_ANY_EXHDR(obj) == strlen(c->object) && memcmp(VARDATA_ANY(obj), c->object, VARSIZE_ANY_EXHDR(obj)) == 0 &&
		VARSIZE_ANY_EXHDR(prv) == strlen(c->priv) && memcmp(VARDATA_ANY(prv), c->priv, VARSIZE_ANY_EXHDR(prv)) == 0)
		return c->value;
	e = acl_for_current(fcinfo);
	a = which == 0 ? e->owners : which == 1 ? e->units : e->records;
	if (c == NULL)
	{
		c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(AclCallCache));
		fcinfo->flinfo->fn_extra = c;
	}
	else if (c->value != (Datum) 0)
		pfree(DatumGetPointer(c->value));
	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	c->value = copy_out(a);
	MemoryContextSwitchTo(old);
	c->generation = acl_generation;
	c->principal = principal;
	c->principal_found = found;
	c->statement = GetCurrentStatementStartTimestamp();
	text_to_cstring_buffer(obj, c->object, sizeof(c->object));
	text_to_cstring_buffer(prv, c->priv, sizeof(c->priv));
	return c->value;
}

/* SQL function: crm.acl_owners(object text, privilege text) returns bigint[] */
PG_FUNCTION_INFO_V1(crm_acl_owners);
Datum
crm_acl_owners(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(acl_call(fcinfo, 0));
}

/* SQL function: crm.acl_units(object text, privilege text) returns bigint[] */
PG_FUNCTION_INFO_V1(crm_acl_units);
Datum
crm_acl_units(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(acl_call(fcinfo, 1));
}

/* SQL function: crm.acl_records(object text, privilege text) returns bigint[] */
PG_FUNCTION_INFO_V1(crm_acl_records);
Datum
crm_acl_records(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(acl_call(fcinfo, 2));
}

/*
 * SQL function: crm.acl_for(principal bigint, object text, privilege text,
 *                           OUT owners bigint[], OUT units bigint[], OUT records bigint[])
 * The same answer for any principal: for explain_access and access_review (crm_admin only).
 */
PG_FUNCTION_INFO_V1(crm_acl_for);
Datum
crm_acl_for(PG_FUNCTION_ARGS)
{
	int64		principal = PG_GETARG_INT64(0);
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int			priv = parse_priv(PG_GETARG_TEXT_PP(2));
	AclEntry   *e = acl_lookup(principal, object, priv);
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "crm.acl_for must return a composite type");
	values[0] = copy_out(e->owners);
	values[1] = copy_out(e->units);
	values[2] = copy_out(e->records);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * SQL function: crm._acl_changed() returns trigger (AFTER ... FOR EACH STATEMENT on crm's catalogs)
 * Announces the change to every backend's access cache, at commit (others) or next command (us).
 */
PG_FUNCTION_INFO_V1(crm_acl_changed);
Datum
crm_acl_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm._acl_changed() must be called as a trigger")));
	CacheInvalidateRelcache(td->tg_relation);
	return PointerGetDatum(NULL);
}

/* walls: (principal, wall) -> excluded?, in the same context and reset with the access cache */
typedef struct WallKey
{
	int64		principal;
	char		wall[ACL_OBJECT_LEN];
} WallKey;
typedef struct WallEntry
{
	WallKey		key;
	bool		excluded;
	char	   *statement;		/* principal -1: the wall's compiled query (NULL: no such wall) */
	char	   *object;			/* principal -1: the wall's object */
} WallEntry;

static void
wall_init_cache(void)
{
	HASHCTL		ctl;

	acl_init_cache();
	if (wall_cache != NULL)
		return;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(WallKey);
	ctl.entrysize = sizeof(WallEntry);
	ctl.hcxt = acl_cxt;
	wall_cache = hash_create("crm wall cache", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static bool
wall_excludes(int64 principal, const char *wall)
{
	WallKey		key;
	WallEntry  *e;
	bool		found;
	bool		excluded = true;	/* fail closed */
	uint64		generation;

	wall_init_cache();
	memset(&key, 0, sizeof(key));
	key.principal = principal;
	strlcpy(key.wall, wall, ACL_OBJECT_LEN);
	e = hash_search(wall_cache, &key, HASH_FIND, &found);
	if (found)
		return e->excluded;

	crm_watch_catalogs();
	generation = acl_generation;
	{
		Oid			types[2] = {INT8OID, TEXTOID};
		Datum		vals[2] = {Int64GetDatum(principal), CStringGetTextDatum(wall)};
		Datum		out[1];
		bool		outnull[1];

		if (crm_query_row_as_owner(
				"WITH RECURSIVE up(id) AS (SELECT p.org_unit_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1"
				"                          UNION SELECT u.parent_id FROM crm.org_unit u JOIN up ON u.id OPERATOR(pg_catalog.=) up.id WHERE u.parent_id IS NOT NULL)"
				" SELECT $1 OPERATOR(pg_catalog.=) ANY (w.principals)"
				"     OR EXISTS (SELECT 1 FROM up WHERE up.id OPERATOR(pg_catalog.=) ANY (w.org_units))"
				"     OR EXISTS (SELECT 1 FROM crm.principal_role pr WHERE pr.principal_id OPERATOR(pg_catalog.=) $1"
				"                 AND pr.role OPERATOR(pg_catalog.=) ANY (w.roles))"
				"   FROM crm.wall w WHERE w.name OPERATOR(pg_catalog.=) $2",
				2, types, vals, out, outnull, 1))
			excluded = outnull[0] ? true : DatumGetBool(out[0]);
	}
	if (generation != acl_generation)	/* the callback reset it meanwhile: this answer may be stale */
		return wall_excludes(principal, wall);
	wall_init_cache();
	e = hash_search(wall_cache, &key, HASH_ENTER, &found);
	e->excluded = excluded;
	return excluded;
}

/*
 * SQL function: crm.wall_excludes(wall text) returns boolean
 * Whether the acting principal is behind the wall (true for nobody: fail closed). Restrictive
 * policies evaluate it per row, so the answer is cached.
 */
PG_FUNCTION_INFO_V1(crm_wall_excludes);
Datum
crm_wall_excludes(PG_FUNCTION_ARGS)
{
	bool		found;
	int64		principal = 0;

	if (crm_is_preloaded)
	{
		principal = crm_current_principal(&found);
		if (!found)
			principal = 0;
	}
	PG_RETURN_BOOL(wall_excludes(principal, text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/* SQL function: crm.wall_excludes_principal(wall text, principal bigint) returns boolean */
PG_FUNCTION_INFO_V1(crm_wall_excludes_principal);
Datum
crm_wall_excludes_principal(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(wall_excludes(PG_GETARG_INT64(1), text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/*
 * SQL function: crm._wall_matches(wall text, record_id bigint) returns boolean
 * Whether a wall's condition holds for a record of the wall's object (walls on a parent, for its
 * children's policies). Evaluated as crm's catalog owner on the real values (never masked, past
 * row security), but only for records the caller could read were it not for walls, so that it
 * is no oracle about records beyond the caller's reach. A wall that no longer exists hides.
 */
/*
 * The query that evaluates a wall's condition for one record ($2) the principal $1 could read, its
 * condition compiled (crm_condition_sql: built-in and crm objects only, resolved when compiled) and
 * kept until walls change. NULL when the wall does not exist.
 */
static WallEntry *
wall_statement(const char *wall)
{
	WallKey		key;
	WallEntry  *e;
	bool		found;
	Oid			types[1] = {TEXTOID};
	Datum		vals[1];
	Datum		out[2];
	bool		outnull[2];
	char	   *sql = NULL;
	char	   *object = NULL;

	wall_init_cache();
	memset(&key, 0, sizeof(key));
	key.principal = -1;
	strlcpy(key.wall, wall, ACL_OBJECT_LEN);
	e = hash_search(wall_cache, &key, HASH_FIND, &found);
	if (found)
		return e;
	vals[0] = CStringGetTextDatum(wall);
	if (crm_query_row_as_owner("SELECT w.condition, w.object FROM crm.wall w WHERE w.name OPERATOR(pg_catalog.=) $1",
							   1, types, vals, out, outnull, 2) && !outnull[0] && !outnull[1])
	{
		object = TextDatumGetCString(out[1]);
		sql = psprintf("SELECT (%s) FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $2"
					   " AND (t.owner_id OPERATOR(pg_catalog.=) ANY (crm.acl_owners($1, 'read'))"
					   "   OR t.org_unit_id OPERATOR(pg_catalog.=) ANY (crm.acl_units($1, 'read'))"
					   "   OR t.id OPERATOR(pg_catalog.=) ANY (crm.acl_records($1, 'read')))",
					   crm_condition_sql(object, TextDatumGetCString(out[0])), quote_identifier(object));
	}
	wall_init_cache();			/* the callback may have reset it meanwhile */
	e = hash_search(wall_cache, &key, HASH_ENTER, &found);
	e->excluded = false;
	e->statement = sql ? MemoryContextStrdup(acl_cxt, sql) : NULL;
	e->object = object ? MemoryContextStrdup(acl_cxt, object) : NULL;
	return e;
}

/*
 * SQL function: crm._wall_matches(wall text, record_id bigint) returns boolean
 * Whether a wall's condition holds for a record of the wall's object (walls on a parent, for its
 * children's policies). Evaluated as crm's catalog owner on the real values (never masked, past
 * row security), with search_path pinned and the condition compiled to built-in and crm objects
 * only, so that no user-defined code sees those values; and only for records the caller could read
 * were it not for walls, so that it is no oracle about records beyond the caller's reach. A wall
 * that no longer exists hides.
 */
PG_FUNCTION_INFO_V1(crm_wall_matches);
Datum
crm_wall_matches(PG_FUNCTION_ARGS)
{
	WallEntry  *w;
	char	   *sql;
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		vals[2];
	Datum		out[1];
	bool		outnull[1];

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	w = wall_statement(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	if (w->statement == NULL)
		PG_RETURN_BOOL(true);
	/* copied: running the statement may reset the cache */
	sql = pstrdup(w->statement);
	vals[0] = CStringGetTextDatum(w->object);
	vals[1] = PG_GETARG_DATUM(1);
	if (!crm_query_row_as_owner(sql, 2, types, vals, out, outnull, 1) || outnull[0])
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(DatumGetBool(out[0]));
}

static bool
array_has_int8(ArrayType *a, int64 v)
{
	int			n = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
	int64	   *d = (int64 *) ARR_DATA_PTR(a);

	for (int i = 0; i < n; i++)
		if (d[i] == v)
			return true;
	return false;
}

/*
 * Whether a principal reaches an owner and/or an org unit for a privilege on an object through
 * its grants and the object's sharing (not through shares of single records). unit < 0: ignore.
 */
bool
crm_acl_reaches(int64 principal, const char *object, const char *priv, int64 owner, int64 unit)
{
	int			p = -1;
	AclEntry   *e;

	for (int i = 0; i < NPRIV; i++)
		if (strcmp(priv, priv_names[i]) == 0)
			p = i;
	if (p < 0)
		elog(ERROR, "unknown privilege \"%s\"", priv);
	e = acl_lookup(principal, object, p);
	return array_has_int8(e->owners, owner) || (unit >= 0 && array_has_int8(e->units, unit));
}
