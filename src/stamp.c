/*
 * stamp.c: the standard columns of every managed table. Owns the C trigger crm.stamp(), which
 * fills owner_id and org_unit_id when they are missing and keeps created_at/created_by and
 * updated_at/updated_by true: callers cannot set or change them. The one exception is the
 * maintenance role (superuser, BYPASSRLS or the table's owner) acting without a principal,
 * whose explicit values are kept so that pg_restore and bulk loads keep their history.
 */
#include "crm.h"

#include "access/htup_details.h"
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
} StampCache;

static int64
owner_unit(int64 owner, const char *relname)
{
	CrmUserSwitch sw;
	volatile bool found = false;
	volatile int64 unit = 0;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(owner)};

		SPI_connect();
		if (SPI_execute_with_args("SELECT p.org_unit_id FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1",
								  1, argtypes, values, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
			{
				unit = DatumGetInt64(d);
				found = true;
			}
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("owner_id %lld of %s is not a principal", (long long) owner, relname)));
	return unit;
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

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm.stamp() must be a BEFORE ROW trigger")));
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
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
						 errmsg("managed table %s has no column %s", relname, col_names[i])));
		}
		fcinfo->flinfo->fn_extra = cache;
	}

	principal = crm_current_principal(&found);
	trusted = !found && (superuser() || has_bypassrls_privilege(GetUserId()) ||
						 pg_class_ownercheck(RelationGetRelid(rel), GetUserId()));
	now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

#define GETCOL(tup, c, isnull) heap_getattr((tup), cache->attnum[c], desc, (isnull))
#define SETCOL(c, v, isnull) do { cols[n] = cache->attnum[c]; vals[n] = (v); nulls[n] = (isnull); n++; } while (0)

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
						 errmsg("owner_id of %s is required when no principal is acting", relname),
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
		if (!explicit_update)
		{
			SETCOL(COL_UPDATED_AT, now, false);
			SETCOL(COL_UPDATED_BY, Int64GetDatum(principal), !found);
		}
	}

	if (n > 0)
		newtup = heap_modify_tuple_by_cols(newtup, desc, n, cols, vals, nulls);
	return PointerGetDatum(newtup);
}
