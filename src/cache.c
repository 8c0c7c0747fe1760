/*
 * cache.c: what crm's per-backend caches share, so that definitions can change while they are used.
 *
 * - Memory. A cache is dropped when what it caches changes (invalidation callbacks), and such a
 *   callback can run inside nearly any catalog access: in the middle of code that holds pointers
 *   into the cache, or that is filling it. Dropped cache memory is therefore retired, not freed: it
 *   stays valid until the end of the top-level transaction (when no crm code runs) and is freed
 *   then. Builders compare crm_cache_generation before and after they query, and build again when
 *   a reset came in between (what they built would be stale).
 * - Column numbers. A cached attribute number is used only while it still names the same live
 *   column of the relation's current descriptor (crm_attnum_valid).
 * - Snapshots. Caches of crm's metadata (which fields an object has, which are encrypted or
 *   sensitive) are read with the latest snapshot, as PostgreSQL reads its own catalogs: the
 *   relation's descriptor is always the latest, while a statement's snapshot may be older (it is
 *   taken before the statement's locks are), so it could list a field the table no longer has, or
 *   not yet list a new column as sensitive.
 * - Data relations. Caches keyed by a crm_data table register it (crm_cache_watch_rel); a relcache
 *   invalidation of that table (a column added or dropped) drops them, not only changes to crm's
 *   catalogs.
 */
#include "crm.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

uint64		crm_cache_generation = 1;

static MemoryContext retired = NULL;
static bool xact_callback_registered = false;

#define MAX_WATCHED_RELS 256
static Oid	watched_rels[MAX_WATCHED_RELS];
static int	n_watched_rels = 0;
static bool watched_overflow = false;

static void
free_retired_at_xact_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		crm_cache_free_retired();
}

/* The context of a cache (made on first use), under CacheMemoryContext. */
MemoryContext
crm_cache_context(MemoryContext *cxt, const char *name)
{
	if (*cxt == NULL)
		*cxt = AllocSetContextCreateInternal(CacheMemoryContext, name, ALLOCSET_SMALL_SIZES);	/* name: a literal */
	return *cxt;
}

/* Drop a cache's memory: it stays valid for whoever still uses it until the transaction ends. */
void
crm_cache_retire(MemoryContext *cxt)
{
	if (*cxt == NULL)
		return;
	if (retired == NULL)
		retired = AllocSetContextCreate(TopMemoryContext, "crm retired caches", ALLOCSET_SMALL_SIZES);
	if (!xact_callback_registered)
	{
		RegisterXactCallback(free_retired_at_xact_end, NULL);
		xact_callback_registered = true;
	}
	MemoryContextSetParent(*cxt, retired);
	*cxt = NULL;
}

/* At the end of a top-level transaction: free what was retired. */
void
crm_cache_free_retired(void)
{
	if (retired != NULL)
		MemoryContextDeleteChildren(retired);
}

/* A cache now holds something about this relation: drop caches when its relcache entry changes. */
void
crm_cache_watch_rel(Oid relid)
{
	for (int i = 0; i < n_watched_rels; i++)
		if (watched_rels[i] == relid)
			return;
	if (n_watched_rels < MAX_WATCHED_RELS)
		watched_rels[n_watched_rels++] = relid;
	else
		watched_overflow = true;
}

/* (In a relcache callback: no catalog access.) Does a cache hold something about this relation? */
bool
crm_cache_rel_watched(Oid relid)
{
	if (watched_overflow)
		return true;
	for (int i = 0; i < n_watched_rels; i++)
		if (watched_rels[i] == relid)
			return true;
	return false;
}

/* The caches that registered relations were dropped. */
void
crm_cache_unwatch_rels(void)
{
	n_watched_rels = 0;
	watched_overflow = false;
}

/* The number of the live column with this name, or 0 (unlike SPI_fnumber: never a system column). */
int
crm_attnum(TupleDesc desc, const char *name)
{
	if (name == NULL)
		return 0;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
			return i + 1;
	}
	return 0;
}

/*
 * The number of a standard column (id, owner_id, ...) of a managed table, of type int8 unless
 * typid says otherwise; an error when the table lacks it (crm's API never drops one).
 */
int
crm_std_attnum(Relation rel, const char *name, Oid typid)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			att = crm_attnum(desc, name);

	if (att == 0 || TupleDescAttr(desc, att - 1)->atttypid != typid)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("managed table %s has no standard column %s of type %s", RelationGetRelationName(rel), name,
						format_type_be(typid)),
				 errhint("Standard columns are made by crm.create_object(); they cannot be dropped or changed.")));
	return att;
}

/* Does attnum still name the live column "name" (of type typid, unless InvalidOid)? */
bool
crm_attnum_valid(TupleDesc desc, int attnum, const char *name, Oid typid)
{
	Form_pg_attribute a;

	if (attnum < 1 || attnum > desc->natts || name == NULL)
		return false;
	a = TupleDescAttr(desc, attnum - 1);
	return !a->attisdropped && strcmp(NameStr(a->attname), name) == 0 &&
		(!OidIsValid(typid) || a->atttypid == typid);
}

/* Run a read-only metadata query (inside an SPI connection) with the latest snapshot. */
int
crm_spi_latest(SPIPlanPtr plan, Datum *values)
{
	/* a parallel operation cannot take a new snapshot: it reads what its leader reads */
	Snapshot	snap = IsInParallelMode() ? GetActiveSnapshot() : GetLatestSnapshot();

	return SPI_execute_snapshot(plan, values, NULL, snap, InvalidSnapshot, true, false, 0);
}
