/*
 * bidxkey.c: the blind-index keys, and their rotation without rewriting history.
 *
 * Keys. Blind indexes (crm_bidx_<field> columns, crypt.c) are HMAC-SHA256 under a data key of their
 * own, wrapped in crm.data_key like every data key: subject "blind_index" (version 1), then
 * "blind_index:<version>" for each rotation. The keys in use are the blind-index subjects present
 * in crm.data_key, newest first: writes use the newest; crm.find() / crm._bidx_lookup() and the
 * unique check of unique searchable fields look under all of them. Outside a rotation there is one.
 *
 * Rotation (CALL crm.rotate_blind_index_key(batch_size), a procedure that commits as it goes):
 *  1. begin: make the new key (its version follows the newest), list the objects with searchable
 *     fields in crm.bidx_rebuild; commit. From then on every writer indexes under the new key (the
 *     new key's row announces itself to every backend's key cache through a relcache invalidation
 *     of crm.data_key).
 *  2. wait: for every writer of those tables that began before (WaitForLockers), since it may have
 *     indexed under the old key only.
 *  3. rebuild, one committed batch of records at a time, in id order: the blind-index columns of the
 *     batch are set to NULL and the write guard (crm_crypt_row) computes them again from the
 *     decrypted value, under the newest key. No audit event (blind indexes are not audited), no
 *     stamp (updated_at/updated_by stay), no rule fires. crm.bidx_rebuild.last_id records how far
 *     it got, so that a retry after an error or a crash goes on from the last committed batch.
 *  4. finish: the older blind-index keys are deleted from crm.data_key (retired).
 * An error (a master key missing from the key file, a key file that cannot be read) rolls back the
 * current batch only; calling the procedure again resumes.
 */
#include "crm.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#define BIDX_SUBJECT	"blind_index"
#define BIDX_SUBJECT_LEN 32

bool		crm_bidx_rebuilding = false;

/* the blind-index subjects in use, newest first (cached until crm's caches are reset) */
static char cached[CRM_BIDX_MAX_KEYS][BIDX_SUBJECT_LEN];
static const char *cached_ptrs[CRM_BIDX_MAX_KEYS];
static int	n_cached = 0;

void
crm_bidx_reset(void)
{
	n_cached = 0;
}

static const char *const keys_sql =
	"SELECT d.subject FROM crm.data_key d"
	" WHERE (d.subject OPERATOR(pg_catalog.=) 'blind_index' OR d.subject OPERATOR(pg_catalog.~) '^blind_index:[0-9]{1,9}$')"
	"   AND d.wrapped IS NOT NULL ORDER BY d.id DESC";

/* Read the blind-index subjects from crm.data_key with the latest snapshot. */
static int
read_subjects(char (*out)[BIDX_SUBJECT_LEN])
{
	CrmUserSwitch sw;
	volatile int n = 0;
	volatile bool pushed = false;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		if (!ActiveSnapshotSet())
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			pushed = true;
		}
		SPI_connect();
		if (crm_spi_latest(crm_kept_plan(keys_sql, 0, NULL), NULL) != SPI_OK_SELECT)
			elog(ERROR, "crm blind-index key lookup failed");
		for (uint64 i = 0; i < SPI_processed && n < CRM_BIDX_MAX_KEYS; i++)
			strlcpy(out[n++], SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), BIDX_SUBJECT_LEN);
		SPI_finish();
		if (pushed)
			PopActiveSnapshot();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	if (n == 0)
		strlcpy(out[n++], BIDX_SUBJECT, BIDX_SUBJECT_LEN);	/* made on first use */
	return n;
}

/* The blind-index subjects in use, newest (the one writes use) first; at least one. */
int
crm_bidx_subjects(const char *const **subjects)
{
	if (n_cached == 0)
	{
		char		tmp[CRM_BIDX_MAX_KEYS][BIDX_SUBJECT_LEN];
		uint64		generation;
		int			n;

		crm_watch_catalogs();
		generation = crm_cache_generation;
		n = read_subjects(tmp);
		memcpy(cached, tmp, sizeof(tmp));
		for (int i = 0; i < n; i++)
			cached_ptrs[i] = cached[i];
		/* a reset while we read: use what we read once, read again next time */
		n_cached = generation == crm_cache_generation ? n : 0;
		*subjects = cached_ptrs;
		return n;
	}
	*subjects = cached_ptrs;
	return n_cached;
}

static int
subject_version(const char *subject)
{
	if (strcmp(subject, BIDX_SUBJECT) == 0)
		return 1;
	return pg_strtoint32(subject + strlen(BIDX_SUBJECT) + 1);
}

/* Does a record other than self hold this blind index (read as crm's owner: every record counts)? */
bool
crm_bidx_taken(const char *object, const char *column, struct varlena *hash, int64 self)
{
	Oid			types[2] = {BYTEAOID, INT8OID};
	Datum		vals[2] = {PointerGetDatum(hash), Int64GetDatum(self)};
	Datum		out[1];
	bool		outnull[1];
	char	   *sql = psprintf("SELECT 1 FROM crm_data.%s t WHERE t.%s OPERATOR(pg_catalog.=) $1"
							   " AND t.id OPERATOR(pg_catalog.<>) $2 LIMIT 1",
							   quote_identifier(object), quote_identifier(column));

	return crm_query_row_as_owner(sql, 2, types, vals, out, outnull, 1);
}

/* --- rotation -------------------------------------------------------------------------------------- */

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "crm blind-index rotation: %s failed: %s", what, SPI_result_code_string(rc));
}

/* Run one fixed statement as crm's owner (with an int4 argument, unless version is 0). */
static void
run_as_owner(const char *sql, int32 version, int expected, const char *what)
{
	CrmUserSwitch sw;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[1] = {INT4OID};
		Datum		vals[1] = {Int32GetDatum(version)};

		SPI_connect();
		spi_check(SPI_execute_with_args(sql, version ? 1 : 0, types, vals, NULL, false, 0), expected, what);
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
}

static void
check_batch(FunctionCallInfo fcinfo, int argno)
{
	int32		batch;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("blind-index rebuild batch size must not be NULL")));
	batch = PG_GETARG_INT32(argno);
	if (batch < 1 || batch > 1000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("blind-index rebuild batch size must be between 1 and 1000000, not %d", batch)));
}

/*
 * crm._bidx_rotation_begin(batch integer) returns integer: the version being rotated to (new, or the
 * one under way). The batch size is checked here, before anything is made.
 */
PG_FUNCTION_INFO_V1(crm_bidx_rotation_begin);
Datum
crm_bidx_rotation_begin(PG_FUNCTION_ARGS)
{
	char		subjects[CRM_BIDX_MAX_KEYS][BIDX_SUBJECT_LEN];
	int			n;
	int			version;

	check_batch(fcinfo, 0);
	crm_watch_catalogs();
	/* one rotation at a time */
	run_as_owner("LOCK TABLE crm.bidx_rebuild IN EXCLUSIVE MODE", 0, SPI_OK_UTILITY, "lock");
	n = read_subjects(subjects);
	version = subject_version(subjects[0]);
	if (n == 1)
	{
		char	   *subject;

		if (version >= 999999999)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("blind-index key version %d is the last one", version)));
		version++;
		subject = psprintf("%s:%d", BIDX_SUBJECT, version);
		(void) crm_crypt_make_bidx_key(subject);	/* checks the key file; wrapped by the current master key */
		/* every backend drops its blind-index key set: writers take up the new key */
		CacheInvalidateRelcacheByRelid(get_relname_relid("data_key", get_namespace_oid("crm", false)));
	}
	run_as_owner("INSERT INTO crm.bidx_rebuild (version, object)"
				 " SELECT DISTINCT $1, f.object FROM crm.fields_searchable f WHERE f.searchable"
				 " ON CONFLICT DO NOTHING", version, SPI_OK_INSERT, "listing the objects");
	crm_bidx_reset();
	PG_RETURN_INT32(version);
}

/* crm._bidx_rotation_wait(version integer): wait out the writers that began before the new key */
PG_FUNCTION_INFO_V1(crm_bidx_rotation_wait);
Datum
crm_bidx_rotation_wait(PG_FUNCTION_ARGS)
{
	int32		version = PG_GETARG_INT32(0);
	List	   *volatile rels = NIL;
	CrmUserSwitch sw;
	Oid			nsp = get_namespace_oid("crm_data", true);
	ListCell   *lc;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[1] = {INT4OID};
		Datum		vals[1] = {Int32GetDatum(version)};

		SPI_connect();
		spi_check(SPI_execute_with_args("SELECT b.object FROM crm.bidx_rebuild b WHERE b.version OPERATOR(pg_catalog.=) $1"
										" AND b.finished_at IS NULL",
										1, types, vals, NULL, true, 0), SPI_OK_SELECT, "listing the objects");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			Oid			relid = OidIsValid(nsp) ?
				get_relname_relid(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), nsp) : InvalidOid;

			if (OidIsValid(relid))
				rels = lappend_oid(rels, relid);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	foreach(lc, rels)
	{
		LOCKTAG		tag;

		SET_LOCKTAG_RELATION(tag, MyDatabaseId, lfirst_oid(lc));
		WaitForLockers(tag, ShareLock, false);
	}
	PG_RETURN_VOID();
}

/* The blind-index columns of an object's searchable fields, as "SET a = NULL, b = NULL" and "a IS NOT NULL OR ...". */
static bool
bidx_columns(const char *object, StringInfo set, StringInfo any)
{
	Oid			types[1] = {TEXTOID};
	Datum		vals[1] = {CStringGetTextDatum(object)};

	spi_check(SPI_execute_with_args("SELECT 'crm_bidx_' OPERATOR(pg_catalog.||) f.name FROM crm.fields_searchable f"
									" JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('crm_data.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(f.object))"
									"  AND a.attname OPERATOR(pg_catalog.=) ('crm_bidx_' OPERATOR(pg_catalog.||) f.name) AND NOT a.attisdropped"
									" WHERE f.object OPERATOR(pg_catalog.=) $1 AND f.searchable ORDER BY f.name",
									1, types, vals, NULL, true, 0), SPI_OK_SELECT, "listing the columns");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		const char *c = quote_identifier(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));

		appendStringInfo(set, "%s%s = NULL", i ? ", " : "", c);
		appendStringInfo(any, "%st.%s IS NOT NULL", i ? " OR " : "", c);
	}
	return SPI_processed > 0;
}

/* Re-index one batch of records of an object; false when the object has none left. */
static bool
rebuild_batch(int32 version, const char *object, int64 last_id, int32 batch, int64 *new_last, int64 *done)
{
	StringInfoData set, any;
	Oid			t2[2] = {INT8OID, INT4OID};
	Datum		v2[2] = {Int64GetDatum(last_id), Int32GetDatum(batch)};
	bool		isnull;
	int64		count;

	initStringInfo(&set);
	initStringInfo(&any);
	if (!OidIsValid(get_relname_relid(object, get_namespace_oid("crm_data", false))) ||
		!bidx_columns(object, &set, &any))
		return false;			/* the object or its searchable fields are gone */
	spi_check(SPI_execute_with_args(psprintf("SELECT pg_catalog.max(s.id), pg_catalog.count(*) FROM"
											 " (SELECT t.id FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.>) $1"
											 "  ORDER BY t.id LIMIT $2) s", quote_identifier(object)),
									2, t2, v2, NULL, false, 0), SPI_OK_SELECT, "choosing the batch");
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (count == 0)
		return false;
	*new_last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	v2[1] = Int64GetDatum(*new_last);
	t2[1] = INT8OID;
	crm_bidx_rebuilding = true;
	PG_TRY();
	{
		/* the write guard computes every blind index set to NULL again, under the newest key */
		spi_check(SPI_execute_with_args(psprintf("UPDATE crm_data.%s t SET %s WHERE t.id OPERATOR(pg_catalog.>) $1"
												 " AND t.id OPERATOR(pg_catalog.<=) $2 AND (%s)",
												 quote_identifier(object), set.data, any.data),
										2, t2, v2, NULL, false, 0), SPI_OK_UPDATE, "re-indexing");
	}
	PG_FINALLY();
	{
		crm_bidx_rebuilding = false;
	}
	PG_END_TRY();
	*done = (int64) SPI_processed;
	return count >= batch;
}

/*
 * crm._bidx_rebuild_step(version integer, batch integer) returns text: re-indexes the next batch of
 * records of the first object not yet done, and returns that object; NULL when every object is done.
 */
PG_FUNCTION_INFO_V1(crm_bidx_rebuild_step);
Datum
crm_bidx_rebuild_step(PG_FUNCTION_ARGS)
{
	int32		version;
	int32		batch;
	CrmUserSwitch sw;
	char	   *volatile object = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("blind-index key version must not be NULL")));
	check_batch(fcinfo, 1);
	version = PG_GETARG_INT32(0);
	batch = PG_GETARG_INT32(1);
	crm_watch_catalogs();
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			t1[1] = {INT4OID};
		Datum		v1[1] = {Int32GetDatum(version)};
		int64		last_id, new_last = 0, done = 0;
		bool		isnull, more;

		SPI_connect();
		spi_check(SPI_execute_with_args("SELECT b.object, b.last_id FROM crm.bidx_rebuild b"
										" WHERE b.version OPERATOR(pg_catalog.=) $1 AND b.finished_at IS NULL"
										" ORDER BY b.object LIMIT 1 FOR UPDATE",
										1, t1, v1, NULL, false, 0), SPI_OK_SELECT, "reading the progress");
		if (SPI_processed == 1)
		{
			Oid			t4[4] = {INT4OID, TEXTOID, INT8OID, INT8OID};
			Datum		v4[4];
			MemoryContext old = MemoryContextSwitchTo(CurTransactionContext);

			object = pstrdup(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
			MemoryContextSwitchTo(old);
			last_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
			more = rebuild_batch(version, object, last_id, batch, &new_last, &done);
			v4[0] = Int32GetDatum(version);
			v4[1] = CStringGetTextDatum(object);
			v4[2] = Int64GetDatum(more || new_last > last_id ? new_last : last_id);
			v4[3] = Int64GetDatum(done);
			spi_check(SPI_execute_with_args(psprintf("UPDATE crm.bidx_rebuild SET last_id = $3,"
													 " rows_done = rows_done OPERATOR(pg_catalog.+) $4%s"
													 " WHERE version OPERATOR(pg_catalog.=) $1 AND object OPERATOR(pg_catalog.=) $2",
													 more ? "" : ", finished_at = pg_catalog.now()"),
											4, t4, v4, NULL, false, 0), SPI_OK_UPDATE, "recording the progress");
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	if (object == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(object));
}

/* crm._bidx_rotation_finish(version integer) returns integer: retires the older keys (how many) */
PG_FUNCTION_INFO_V1(crm_bidx_rotation_finish);
Datum
crm_bidx_rotation_finish(PG_FUNCTION_ARGS)
{
	int32		version = PG_GETARG_INT32(0);
	char		subjects[CRM_BIDX_MAX_KEYS][BIDX_SUBJECT_LEN];
	int			n = read_subjects(subjects);
	CrmUserSwitch sw;
	volatile int64 retired = 0;

	if (subject_version(subjects[0]) != version)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("blind-index key version %d is not the newest (%d is)", version, subject_version(subjects[0]))));
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			t1[1] = {INT4OID};
		Datum		v1[1] = {Int32GetDatum(version)};

		SPI_connect();
		spi_check(SPI_execute_with_args("SELECT b.object FROM crm.bidx_rebuild b WHERE b.version OPERATOR(pg_catalog.=) $1"
										" AND b.finished_at IS NULL LIMIT 1", 1, t1, v1, NULL, false, 0),
				  SPI_OK_SELECT, "reading the progress");
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the blind indexes of object \"%s\" are not yet rebuilt under key version %d",
							crm_short(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)), version),
					 errhint("CALL crm.rotate_blind_index_key() again: it goes on from where it stopped.")));
		for (int i = 1; i < n; i++)
		{
			Oid			tt[1] = {TEXTOID};
			Datum		vv[1] = {CStringGetTextDatum(subjects[i])};

			spi_check(SPI_execute_with_args("DELETE FROM crm.data_key d WHERE d.subject OPERATOR(pg_catalog.=) $1",
											1, tt, vv, NULL, false, 0), SPI_OK_DELETE, "retiring the old key");
			retired += SPI_processed;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	crm_bidx_reset();
	PG_RETURN_INT64(retired);
}
