/*
 * guard.c: the field write guard. Owns the C trigger crm.guard() on every managed table: a
 * principal may write a field only at level 'write' (for that record: its own_level on records it
 * owns). An UPDATE that leaves such a field unchanged passes; an INSERT may only leave it at its
 * default. Levels come from crm._field_levels(), cached per principal and object and dropped with
 * crm's other caches when fields, field levels, roles or principals change.
 */
#include "crm.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/typcache.h"

typedef struct GuardKey
{
	int64		principal;
	Oid			relid;
} GuardKey;

typedef struct GuardEntry
{
	GuardKey	key;
	CrmFieldLevels levels;
} GuardEntry;

static HTAB *guard_cache = NULL;
static MemoryContext guard_cxt = NULL;
uint64		crm_levels_generation = 1;

void
crm_guard_reset(void)
{
	crm_levels_generation++;
	guard_cache = NULL;
	/* callers may hold entries still (a reset can come in the middle of a lookup): retire, not free */
	crm_cache_retire(&guard_cxt);
}

static int
rank_of(const char *level)
{
	if (strcmp(level, "write") == 0)
		return 3;
	if (strcmp(level, "read") == 0)
		return 2;
	if (strcmp(level, "masked") == 0)
		return 1;
	return 0;
}

static GuardEntry *guard_lookup(int64 principal, Relation rel);

/*
 * The fields of a managed table that a principal may not write everywhere (rank < 3 for its own
 * or others' records), with their levels and masks; cached.
 */
CrmFieldLevels *
crm_field_levels(int64 principal, Relation rel)
{
	return &guard_lookup(principal, rel)->levels;
}

static GuardEntry *
guard_lookup(int64 principal, Relation rel)
{
	GuardKey	key;
	GuardEntry *e;
	bool		found;
	CrmUserSwitch sw;
	GuardEntry	tmp;

	uint64		generation;
	MemoryContext build_cxt;

	if (guard_cache == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(GuardKey);
		ctl.entrysize = sizeof(GuardEntry);
		ctl.hcxt = crm_cache_context(&guard_cxt, "crm field guard cache");
		guard_cache = hash_create("crm field guard cache", 32, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.principal = principal;
	key.relid = RelationGetRelid(rel);
	e = hash_search(guard_cache, &key, HASH_FIND, &found);
	if (found)
		return e;

	crm_watch_catalogs();
	generation = crm_cache_generation;
	crm_cache_watch_rel(key.relid);
	/* (crm_watch_catalogs may have taken in a reset that retired guard_cxt: never build in NULL) */
	build_cxt = crm_cache_context(&guard_cxt, "crm field guard cache");
	memset(&tmp, 0, sizeof(tmp));
	tmp.key = key;
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[2] = {INT8OID, TEXTOID};
		Datum		vals[2] = {Int64GetDatum(principal), CStringGetTextDatum(RelationGetRelationName(rel))};

		static SPIPlanPtr plan = NULL;	/* kept: the plan cache replans it when crm's catalogs change */

		SPI_connect();
		if (plan == NULL)
		{
			SPIPlanPtr	p = SPI_prepare(
				"SELECT l.field, l.level, l.own_level, f.default_value OPERATOR(pg_catalog.#>>) '{}'::pg_catalog.text[], l.mask, f.encrypted,"
				"       COALESCE((f.options OPERATOR(pg_catalog.->>) 'searchable')::boolean, false),"
				"       f.sensitivity OPERATOR(pg_catalog.=) 'sensitive'"
				"  FROM crm._field_levels($1, $2) l JOIN crm.field f ON f.object OPERATOR(pg_catalog.=) $2 AND f.name OPERATOR(pg_catalog.=) l.field"
				" WHERE l.level OPERATOR(pg_catalog.<>) 'write' OR l.own_level OPERATOR(pg_catalog.<>) 'write' OR f.encrypted"
				"    OR f.sensitivity OPERATOR(pg_catalog.=) 'sensitive'", 2, types);

			if (p == NULL)
				elog(ERROR, "crm field level query could not be prepared: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(p);
			plan = p;
		}
		/* the latest snapshot: what the relation's descriptor says too (cache.c) */
		if (crm_spi_latest(plan, vals) != SPI_OK_SELECT)
			elog(ERROR, "crm field level query failed");
		if (SPI_processed > 0)
		{
			/* (if a reset retires build_cxt meanwhile, the entry is built again below) */
			MemoryContext old = MemoryContextSwitchTo(build_cxt);
			int			n = 0;

			/* room for a blind-index column per field */
			tmp.levels.fields = palloc0(sizeof(CrmFieldLevel) * SPI_processed * 2);
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	t = SPI_tuptable->vals[i];
				TupleDesc	d = SPI_tuptable->tupdesc;
				char	   *def = SPI_getvalue(t, d, 4);
				CrmFieldLevel *f = &tmp.levels.fields[n++];
				bool		isnull;

				f->name = pstrdup(SPI_getvalue(t, d, 1));
				f->attnum = crm_attnum(RelationGetDescr(rel), f->name);
				f->atttypid = f->attnum > 0 ? TupleDescAttr(RelationGetDescr(rel), f->attnum - 1)->atttypid : InvalidOid;
				f->rank = rank_of(SPI_getvalue(t, d, 2));
				f->own_rank = rank_of(SPI_getvalue(t, d, 3));
				f->default_text = def ? pstrdup(def) : NULL;
				f->mask = pstrdup(SPI_getvalue(t, d, 5));
				f->kind = DatumGetBool(SPI_getbinval(t, d, 6, &isnull)) ? CRM_FIELD_ENCRYPTED : CRM_FIELD_PLAIN;
				f->sensitive = DatumGetBool(SPI_getbinval(t, d, 8, &isnull));
				/* the masking hook rewrites queries with any of these (sensitive: to audit reads) */
				if (f->rank < 2 || f->own_rank < 2 || f->kind == CRM_FIELD_ENCRYPTED || f->sensitive)
					tmp.levels.any_unreadable = true;
				if (f->kind == CRM_FIELD_ENCRYPTED && DatumGetBool(SPI_getbinval(t, d, 7, &isnull)))
				{
					/* the blind index reveals equality: it is as readable as its field */
					CrmFieldLevel *b = &tmp.levels.fields[n++];

					*b = *f;
					b->name = psprintf("crm_bidx_%s", f->name);
					b->attnum = crm_attnum(RelationGetDescr(rel), b->name);
					b->atttypid = b->attnum > 0 ? TupleDescAttr(RelationGetDescr(rel), b->attnum - 1)->atttypid : InvalidOid;
					b->kind = CRM_FIELD_BLIND_INDEX;
					b->default_text = NULL;
					b->sensitive = false;
					b->mask = pstrdup("full");
				}
			}
			tmp.levels.nfields = n;
			MemoryContextSwitchTo(old);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	if (generation != crm_cache_generation || guard_cache == NULL)	/* reset while we queried: again */
		return guard_lookup(principal, rel);
	e = hash_search(guard_cache, &key, HASH_ENTER, &found);
	*e = tmp;
	return e;
}

/* equality by the type's own = operator (so 1.0 = 1.00), bytes when it has none */
static bool
values_equal(TupleDesc desc, int att, Datum a, Datum b)
{
	Form_pg_attribute attr = TupleDescAttr(desc, att - 1);
	TypeCacheEntry *tc = lookup_type_cache(attr->atttypid, TYPECACHE_EQ_OPR_FINFO);

	if (OidIsValid(tc->eq_opr_finfo.fn_oid))
		return DatumGetBool(FunctionCall2Coll(&tc->eq_opr_finfo, attr->attcollation, a, b));
	return datumIsEqual(a, b, attr->attbyval, attr->attlen);
}

static const char *
level_name(int rank)
{
	static const char *const names[] = {"hidden", "masked", "read", "write"};

	return names[rank];
}

/* SQL function: crm.guard() returns trigger (BEFORE INSERT OR UPDATE, FOR EACH ROW) */
PG_FUNCTION_INFO_V1(crm_guard);
Datum
crm_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newtup, oldtup = NULL;
	bool		found;
	int64		principal;
	GuardEntry *e;
	int			owner_att;
	bool		isnull;
	bool		own;
	Bitmapset  *enc_changed = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm.guard() must be a BEFORE ROW trigger")));
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	/* only crm's own tables: elsewhere it would look up records past row security for anyone */
	if (get_rel_namespace(RelationGetRelid(rel)) != get_namespace_oid("crm_data", true))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s may only be used on tables in crm_data", "crm.guard()")));
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		oldtup = td->tg_trigtuple;
		newtup = td->tg_newtuple;
	}
	else
		newtup = td->tg_trigtuple;

	/* a record's id never changes (the audit trail, shares and data keys hang on it) */
	if (oldtup != NULL)
	{
		int			idatt = crm_std_attnum(rel, "id", INT8OID);
		bool		n1, n2;
		Datum		a = heap_getattr(oldtup, idatt, desc, &n1);
		Datum		b = heap_getattr(newtup, idatt, desc, &n2);

		if ((n1 != n2 || (!n1 && DatumGetInt64(a) != DatumGetInt64(b))))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the id of record %lld of %s cannot change", (long long) DatumGetInt64(a),
							crm_short(RelationGetRelationName(rel)))),
					 errhint("Make a new record instead."));
	}

	principal = crm_current_principal(&found);

	/* encrypted fields: whoever writes, only ciphertext is stored (crypt.c) */
	newtup = crm_crypt_row(rel, newtup, oldtup, found, &enc_changed);

	/* without a principal, row security decides (nobody writes; the maintenance role may) */
	if (!found)
		return PointerGetDatum(newtup);

	/*
	 * Moving a record (owner, org unit, or for a child its parent, which sets both) needs edit
	 * reach through one's grants to where it was and to where it goes: a share lets one edit a
	 * record, not hand it on, and nobody moves a record to an owner beyond their own scope.
	 */
	if (oldtup != NULL)
	{
		const char *relname = RelationGetRelationName(rel);
		int			oatt = crm_std_attnum(rel, "owner_id", INT8OID);
		int			uatt = crm_std_attnum(rel, "org_unit_id", INT8OID);
		bool		n1, n2, n3, n4;
		int64		old_owner = DatumGetInt64(heap_getattr(oldtup, oatt, desc, &n1));
		int64		new_owner = DatumGetInt64(heap_getattr(newtup, oatt, desc, &n2));
		int64		old_unit = DatumGetInt64(heap_getattr(oldtup, uatt, desc, &n3));
		int64		new_unit = DatumGetInt64(heap_getattr(newtup, uatt, desc, &n4));

		if (!(n1 || n2 || n3 || n4) && (old_owner != new_owner || old_unit != new_unit))
		{
			int64		id = DatumGetInt64(heap_getattr(oldtup, crm_std_attnum(rel, "id", INT8OID), desc, &n1));
			int64		owner_home = crm_principal_unit(new_owner);

			if (!crm_acl_reaches(principal, relname, "edit", old_owner, old_unit))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to move record %lld of %s", (long long) id, crm_short(relname)),
						 errdetail("You may edit it only through a share, which does not let you hand it on.")));
			if (!crm_acl_reaches(principal, relname, "edit", new_owner, owner_home) ||
				!(new_unit == old_unit || new_unit == owner_home ||
				  crm_acl_reaches(principal, relname, "edit", -1, new_unit)))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to move record %lld of %s to owner %lld in org unit %lld",
								(long long) id, crm_short(relname), (long long) new_owner, (long long) new_unit),
						 errdetail("The new owner, and a new org unit, must be within your own edit scope.")));
		}
	}

	e = guard_lookup(principal, rel);
	if (e->levels.nfields == 0)
		return PointerGetDatum(newtup);

	owner_att = crm_std_attnum(rel, "owner_id", INT8OID);
	{
		Datum		owner = heap_getattr(oldtup ? oldtup : newtup, owner_att, desc, &isnull);

		own = !isnull && DatumGetInt64(owner) == principal;
	}

	/*
	 * Taking a record into one's own book must not be a way to raise one's access to its fields:
	 * refuse it when some field would become more visible or writable than it is now.
	 */
	if (oldtup != NULL && !own)
	{
		Datum		newowner = heap_getattr(newtup, owner_att, desc, &isnull);

		if (!isnull && DatumGetInt64(newowner) == principal)
			for (int i = 0; i < e->levels.nfields; i++)
				if (e->levels.fields[i].own_rank > e->levels.fields[i].rank)
					ereport(ERROR,
							(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							 errmsg("permission denied to take record %lld of %s into your own book",
									(long long) DatumGetInt64(heap_getattr(newtup, crm_std_attnum(rel, "id", INT8OID), desc, &isnull)),
									crm_short(RelationGetRelationName(rel))),
							 errdetail("Field %s.%s is %s for you on others' records and %s on your own.",
									   crm_shortn(RelationGetRelationName(rel), 256), crm_shortn(e->levels.fields[i].name, 256),
									   crm_shortn(level_name(e->levels.fields[i].rank), 256), crm_shortn(level_name(e->levels.fields[i].own_rank), 256)),
							 errhint("Someone whose access does not change with ownership (an admin) can reassign it.")));
	}

	for (int i = 0; i < e->levels.nfields; i++)
	{
		CrmFieldLevel *f = &e->levels.fields[i];
		int			rank = own ? f->own_rank : f->rank;
		int			att;
		Datum		nv;
		bool		nnull;
		bool		changed;

		if (rank >= 3 || f->kind == CRM_FIELD_BLIND_INDEX)
			continue;			/* blind indexes are recomputed from their field whatever is written */
		att = f->attnum;
		/* a field the table does not have (now) cannot be written */
		if (!crm_attnum_valid(desc, att, f->name, f->atttypid))
			continue;
		nv = heap_getattr(newtup, att, desc, &nnull);
		if (f->kind == CRM_FIELD_ENCRYPTED)
			changed = bms_is_member(att, enc_changed);	/* compared as plaintext */
		else if (oldtup != NULL)
		{
			bool		onull;
			Datum		ov = heap_getattr(oldtup, att, desc, &onull);

			changed = (nnull || onull) ? nnull != onull : !values_equal(desc, att, nv, ov);
		}
		else
		{
			/* an INSERT may leave the field empty or at its default */
			if (nnull)
				changed = false;
			else if (f->default_text == NULL)
				changed = true;
			else
			{
				Oid			in, ioparam;
				int			nest;
				Datum		def;

				/* read as crm.add_field wrote it, whatever the writer's DateStyle or TimeZone */
				getTypeInputInfo(TupleDescAttr(desc, att - 1)->atttypid, &in, &ioparam);
				nest = crm_pin_search_path(CRM_SAFE_SEARCH_PATH);
				def = OidInputFunctionCall(in, f->default_text, ioparam, TupleDescAttr(desc, att - 1)->atttypmod);
				crm_unpin_search_path(nest);
				changed = !values_equal(desc, att, nv, def);
			}
		}
		if (changed)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to write field %s.%s", crm_short(RelationGetRelationName(rel)), crm_short(f->name)),
					 errdetail("Your level for this field on this record is %s.", crm_shortn(level_name(rank), 256)),
					 errhint(oldtup ? "An UPDATE that leaves the field unchanged is allowed."
							 : "Leave the field out of the INSERT, or at its default.")));
	}
	return PointerGetDatum(newtup);
}

/*
 * SQL function: crm._write_denied(anyelement, object text, field text) returns anyelement
 * Raised by UPDATEs the masking hook rewrote: writing a field one may not read on this record is
 * refused whatever the value (so an UPDATE cannot be used to test guesses).
 */
PG_FUNCTION_INFO_V1(crm_write_denied);
Datum
crm_write_denied(PG_FUNCTION_ARGS)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to write field %s.%s",
					crm_short(PG_ARGISNULL(1) ? "?" : text_to_cstring(PG_GETARG_TEXT_PP(1))),
					crm_short(PG_ARGISNULL(2) ? "?" : text_to_cstring(PG_GETARG_TEXT_PP(2)))),
			 errdetail("You may not read this field on this record, so you may not write it either.")));
	PG_RETURN_NULL();
}
