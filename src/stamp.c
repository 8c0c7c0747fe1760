/*
 * stamp.c: the standard columns of every managed table. Owns the C trigger crm.stamp(), which
 * fills owner_id and org_unit_id when they are missing and keeps created_at/created_by and
 * updated_at/updated_by true: callers cannot set or change them. The one exception is the
 * maintenance role (superuser, BYPASSRLS or the table's owner) acting without a principal,
 * whose explicit values are kept so that pg_restore and bulk loads keep their history.
 */
#include "crm.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

enum
{
	COL_OWNER, COL_UNIT, COL_CREATED_AT, COL_CREATED_BY, COL_UPDATED_AT, COL_UPDATED_BY, NCOLS
};
static const char *const col_names[NCOLS] = {
	"owner_id", "org_unit_id", "created_at", "created_by", "updated_at", "updated_by"
};

typedef struct StampCache
{
	Oid			relid;
	int			attnum[NCOLS];
	int64		last_owner;		/* owner -> org unit, for runs of rows with one owner */
	int64		last_unit;
	bool		last_valid;
	/* a child object follows its parent record (trigger arguments: field, parent object) */
	int			parent_attnum;	/* 0: no parent */
	char	   *parent_sql;
	int64		last_parent;
	int64		parent_owner;
	int64		parent_unit;
	bool		parent_valid;
} StampCache;

/* The owner and org unit of a parent record, as crm's catalog owner (row security aside). */
static void
parent_owner_unit(StampCache *cache, int64 parent, const char *relname, const char *field)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(parent)};
	Datum		out[2];
	bool		outnull[2];

	if (!crm_query_row_as_owner(cache->parent_sql, 1, argtypes, values, out, outnull, 2) ||
		outnull[0] || outnull[1])
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("%s.%s refers to record %lld, which does not exist", crm_short(relname), crm_short(field), (long long) parent)));
	cache->parent_owner = DatumGetInt64(out[0]);
	cache->parent_unit = DatumGetInt64(out[1]);
	cache->last_parent = parent;
	cache->parent_valid = true;
}
/* The org unit of a principal, or -1 when it is not one. */
int64
crm_principal_unit(int64 principal)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(principal)};
	Datum		out[1];
	bool		outnull[1];

	if (!crm_query_row_as_owner("SELECT p.org_unit_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, out, outnull, 1) || outnull[0])
		return -1;
	return DatumGetInt64(out[0]);
}

static int64
owner_unit(int64 owner, const char *relname)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(owner)};
	Datum		out[1];
	bool		outnull[1];

	if (!crm_query_row_as_owner("SELECT p.org_unit_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, out, outnull, 1) || outnull[0])
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("owner_id %lld of %s is not a principal", (long long) owner, crm_short(relname))));
	return DatumGetInt64(out[0]);
}

/* SQL function: crm.stamp() returns trigger (BEFORE INSERT OR UPDATE, FOR EACH ROW) */
PG_FUNCTION_INFO_V1(crm_stamp);
Datum
crm_stamp(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	StampCache *cache;
	HeapTuple	newtup, oldtup = NULL;
	bool		is_insert;
	bool		found;
	int64		principal;
	bool		trusted;
	Datum		now;
	int			cols[NCOLS];
	Datum		vals[NCOLS];
	bool		nulls[NCOLS];
	int			n = 0;
	const char *relname;
	bool		is_child_insert = false;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm.stamp() must be a BEFORE ROW trigger")));
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	/* only crm's own tables: elsewhere it would look up records past row security for anyone */
	if (get_rel_namespace(RelationGetRelid(rel)) != get_namespace_oid("crm_data", true))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s may only be used on tables in crm_data", "crm.stamp()")));
	relname = RelationGetRelationName(rel);
	is_insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
	if (is_insert)
		newtup = td->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		oldtup = td->tg_trigtuple;
		newtup = td->tg_newtuple;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm.stamp() fires on INSERT or UPDATE only")));

	cache = (StampCache *) fcinfo->flinfo->fn_extra;
	if (cache == NULL || cache->relid != RelationGetRelid(rel))
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(StampCache));
		cache->relid = RelationGetRelid(rel);
		for (int i = 0; i < NCOLS; i++)
		{
			cache->attnum[i] = SPI_fnumber(desc, col_names[i]);
			if (cache->attnum[i] <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("managed table %s has no column %s", crm_short(relname), crm_short(col_names[i]))));
		}
		if (td->tg_trigger->tgnargs == 2)
		{
			const char *field = td->tg_trigger->tgargs[0];
			const char *parent = td->tg_trigger->tgargs[1];

			cache->parent_attnum = SPI_fnumber(desc, field);
			if (cache->parent_attnum <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("managed table %s has no column %s", crm_short(relname), crm_short(field))));
			cache->parent_sql = MemoryContextStrdup(fcinfo->flinfo->fn_mcxt,
													psprintf("SELECT t.owner_id, t.org_unit_id FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $1",
															 quote_identifier(parent)));
		}
		fcinfo->flinfo->fn_extra = cache;
	}

#define GETCOL(tup, c, isnull) heap_getattr((tup), cache->attnum[c], desc, (isnull))
#define SETCOL(c, v, isnull) do { cols[n] = cache->attnum[c]; vals[n] = (v); nulls[n] = (isnull); n++; } while (0)

	principal = crm_current_principal(&found);
	trusted = !found && (superuser() || has_bypassrls_privilege(GetUserId()) ||
						 pg_class_ownercheck(RelationGetRelid(rel), GetUserId()));
	now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	/* a child record's owner and unit are its parent's, whatever the caller says */
	if (cache->parent_attnum > 0)
	{
		bool		pnull;
		Datum		pv = heap_getattr(newtup, cache->parent_attnum, desc, &pnull);

		is_child_insert = is_insert && !pnull;

		/* re-pointing a child to another parent needs edit reach through grants to where it was */
		if (oldtup != NULL && found)
		{
			bool		opnull;
			Datum		opv = heap_getattr(oldtup, cache->parent_attnum, desc, &opnull);

			if (opnull != pnull || (!pnull && DatumGetInt64(opv) != DatumGetInt64(pv)))
			{
				bool		n1, n2;
				int64		oo = DatumGetInt64(GETCOL(oldtup, COL_OWNER, &n1));
				int64		ou = DatumGetInt64(GETCOL(oldtup, COL_UNIT, &n2));

				if (!crm_acl_reaches(principal, relname, "edit", oo, ou))
					ereport(ERROR,
							(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							 errmsg("permission denied to move a record of %s to another %s", crm_short(relname),
									crm_short(td->tg_trigger->tgargs[1])),
							 errdetail("You may edit it only through a share, which does not let you move it.")));
			}
		}
		if (!pnull)
		{
			if (!cache->parent_valid || cache->last_parent != DatumGetInt64(pv))
				parent_owner_unit(cache, DatumGetInt64(pv), relname, td->tg_trigger->tgargs[0]);
			SETCOL(COL_OWNER, Int64GetDatum(cache->parent_owner), false);
			SETCOL(COL_UNIT, Int64GetDatum(cache->parent_unit), false);
			newtup = heap_modify_tuple_by_cols(newtup, desc, n, cols, vals, nulls);
			n = 0;
		}
	}

	if (is_insert)
	{
		bool		onull, unull, isnull;
		Datum		owner = GETCOL(newtup, COL_OWNER, &onull);

		(void) GETCOL(newtup, COL_UNIT, &unull);
		if (onull)
		{
			if (!found)
				ereport(ERROR,
						(errcode(ERRCODE_NOT_NULL_VIOLATION),
						 errmsg("owner_id of %s is required when no principal is acting", crm_short(relname)),
						 errhint("Give owner_id, or act as a principal.")));
			owner = Int64GetDatum(principal);
			SETCOL(COL_OWNER, owner, false);
		}
		if (unull)
		{
			int64		o = DatumGetInt64(owner);

			if (!cache->last_valid || cache->last_owner != o)
			{
				cache->last_unit = owner_unit(o, relname);
				cache->last_owner = o;
				cache->last_valid = true;
			}
			SETCOL(COL_UNIT, Int64GetDatum(cache->last_unit), false);
		}
		if (!trusted || (GETCOL(newtup, COL_CREATED_AT, &isnull), isnull))
			SETCOL(COL_CREATED_AT, now, false);
		if (!trusted)
			SETCOL(COL_CREATED_BY, Int64GetDatum(principal), !found);
		if (!trusted || (GETCOL(newtup, COL_UPDATED_AT, &isnull), isnull))
			SETCOL(COL_UPDATED_AT, now, false);
		if (!trusted)
			SETCOL(COL_UPDATED_BY, Int64GetDatum(principal), !found);
	}
	else
	{
		bool		oldnull, newnull;
		Datum		oldv, newv;
		bool		explicit_update;

		/* created_* never change, except by the maintenance role */
		for (int c = COL_CREATED_AT; c <= COL_CREATED_BY; c++)
		{
			oldv = GETCOL(oldtup, c, &oldnull);
			if (!trusted)
				SETCOL(c, oldv, oldnull);
		}
		oldv = GETCOL(oldtup, COL_UPDATED_AT, &oldnull);
		newv = GETCOL(newtup, COL_UPDATED_AT, &newnull);
		explicit_update = trusted && !newnull &&
			(oldnull || DatumGetTimestampTz(oldv) != DatumGetTimestampTz(newv));
		/* a blind-index rebuild (bidxkey.c) changes no business value: the record keeps its stamp */
		if (!explicit_update && !crm_bidx_rebuilding)
		{
			SETCOL(COL_UPDATED_AT, now, false);
			SETCOL(COL_UPDATED_BY, Int64GetDatum(principal), !found);
		}
	}

	if (n > 0)
		newtup = heap_modify_tuple_by_cols(newtup, desc, n, cols, vals, nulls);

	/*
	 * A new record (other than a child, which follows its parent) goes only to an owner within
	 * one's create scope, and to that owner's unit or a unit within one's create scope.
	 */
	if (is_insert && found && !is_child_insert)
	{
		bool		n1, n2;
		int64		owner = DatumGetInt64(GETCOL(newtup, COL_OWNER, &n1));
		int64		unit = DatumGetInt64(GETCOL(newtup, COL_UNIT, &n2));

		if (!n1 && !n2)
		{
			int64		owner_home = crm_principal_unit(owner);

			if (!crm_acl_reaches(principal, relname, "create", owner, owner_home) ||
				!(unit == owner_home || crm_acl_reaches(principal, relname, "create", -1, unit)))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to create a record of %s for owner %lld in org unit %lld",
								crm_short(relname), (long long) owner, (long long) unit),
						 errdetail("The owner, and the org unit if it is not the owner's own, must be within your create scope.")));
		}
	}
	return PointerGetDatum(newtup);
}
