/*
 * auditwal.c: the audit worker. It reads crm's event records from WAL, from where its physical
 * replication slot "crm_audit" keeps WAL for it, and hands each event to its database's writer
 * (auditwriter.c) through slots in shared memory, starting the writers it needs. The replication
 * slot only moves past events that their writer has committed: an event no writer has written yet
 * is read again after a crash or a restart (the writer's recorded WAL position keeps it from being
 * written twice). When every slot is taken the worker stops reading and waits: WAL holds the rest,
 * nothing is dropped.
 *
 * It also writes to WAL the events of processes that could not (the ring), and records how many
 * events could not be kept at all.
 */
#include "crm.h"
#include "auditq_int.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecovery.h"
#include "access/xlogutils.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void crm_audit_launcher_main(Datum arg);

static XLogReaderState *reader = NULL;
static ReadLocalXLogPageNoWaitPrivate reader_private;
static XLogRecPtr next_lsn = InvalidXLogRecPtr;	/* where reading goes on */
static bool positioned = false; /* next_lsn is a record's start */
static bool have_slot = false;
static BackgroundWorkerHandle *writers[AQ_MAXDB];
static TimestampTz writer_started[AQ_MAXDB];
static int	free_hint = 0;

/* --- the replication slot ------------------------------------------------------------------------ */

static void
slot_create(void)
{
	ReplicationSlotCreate(CRM_SLOT_NAME, false, RS_PERSISTENT, false);
	ReplicationSlotReserveWal();
	ReplicationSlotMarkDirty();
	ReplicationSlotSave();
}

/* a MAINTENANCE entry in every database with crm: the events in this WAL range may be lost */
static void
record_lost_wal(XLogRecPtr from, XLogRecPtr to)
{
	char		d[300];

	ereport(WARNING,
			(errmsg("crm audit worker: replication slot \"%s\" was invalidated; audit events in WAL from %X/%X to %X/%X may be lost",
					CRM_SLOT_NAME, LSN_FORMAT_ARGS(from), LSN_FORMAT_ARGS(to)),
			 errhint("max_slot_wal_keep_size let a checkpoint remove WAL that held audit events not yet written.")));
	snprintf(d, sizeof(d), "{\"operation\": \"audit events lost\", \"reason\": \"replication slot %s was invalidated\","
			 " \"wal_from\": \"%X/%X\", \"wal_to\": \"%X/%X\"}", CRM_SLOT_NAME, LSN_FORMAT_ARGS(from), LSN_FORMAT_ARGS(to));
	(void) crm_auditq_push("", "MAINTENANCE", NULL, 0, 0, "", "", "", "crm audit worker", d);
}

static void
slot_setup(void)
{
	if (max_replication_slots < 1 || wal_level < WAL_LEVEL_REPLICA)
	{
		ereport(WARNING,
				(errmsg("crm audit worker: no replication slot (wal_level = %s, max_replication_slots = %d)",
						wal_level < WAL_LEVEL_REPLICA ? "minimal" : "replica or higher", max_replication_slots),
				 errdetail("Audit events not yet written to crm.audit_log when a checkpoint removes their WAL can be lost."),
				 errhint("Set wal_level = replica (the default) and max_replication_slots to 1 or more.")));
		next_lsn = GetRedoRecPtr();
		return;
	}
	if (SearchNamedReplicationSlot(CRM_SLOT_NAME, true) != NULL)
	{
		ReplicationSlotAcquire(CRM_SLOT_NAME, true);
		if (XLogRecPtrIsInvalid(MyReplicationSlot->data.restart_lsn))
		{
			/*
			 * Invalidated: max_slot_wal_keep_size let a checkpoint remove WAL it kept (a writer could
			 * not write for that long). What was in it is lost: a new slot, and the loss recorded.
			 */
			XLogRecPtr	lost_from = MyReplicationSlot->data.invalidated_at;

			ReplicationSlotRelease();
			ReplicationSlotDrop(CRM_SLOT_NAME, true);
			slot_create();
			record_lost_wal(lost_from, MyReplicationSlot->data.restart_lsn);
		}
	}
	else
		slot_create();
	have_slot = true;
	next_lsn = MyReplicationSlot->data.restart_lsn;
}

/* WAL before upto is no longer needed: every event in it is written */
static void
slot_advance(XLogRecPtr upto)
{
	if (!have_slot || XLogRecPtrIsInvalid(upto) || upto <= MyReplicationSlot->data.restart_lsn)
		return;
	SpinLockAcquire(&MyReplicationSlot->mutex);
	MyReplicationSlot->data.restart_lsn = upto;
	SpinLockRelease(&MyReplicationSlot->mutex);
	ReplicationSlotMarkDirty();
	ReplicationSlotsComputeRequiredLSN();
}

/* --- databases ----------------------------------------------------------------------------------- */

/*
 * What pg_database holds (OID and name of each database), read again only once it has changed.
 * Without a database of its own, this process has no index of the shared catalogs (like the
 * autovacuum launcher): a lookup is a heap scan, so it is done once for many events (a flood of
 * failed logins naming a database by name must not cost a scan each). The copy is marked stale by
 * pg_database's invalidations, which every transaction start takes in: an event was written by a
 * process connected to its database or naming it as it stood, so a change that came before it is
 * seen before the event is looked up.
 */
typedef struct DbCacheEntry
{
	Oid			oid;
	bool		is_template;
	NameData	name;
} DbCacheEntry;

static DbCacheEntry *db_cache = NULL;
static int	db_cache_n = 0;
static int	db_cache_size = 0;
static bool db_cache_valid = false;

static void
db_cache_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	db_cache_valid = false;
}

static void
db_cache_load(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	db_cache_n = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	db_cache_valid = true;		/* (changes committed after the snapshot below mark it stale) */
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);

		if (db_cache_n == db_cache_size)
		{
			db_cache_size = Max(64, db_cache_size * 2);
			db_cache = db_cache == NULL ? MemoryContextAlloc(TopMemoryContext, db_cache_size * sizeof(DbCacheEntry))
				: repalloc(db_cache, db_cache_size * sizeof(DbCacheEntry));
		}
		db_cache[db_cache_n].oid = d->oid;
		db_cache[db_cache_n].is_template = d->datistemplate;
		db_cache[db_cache_n].name = d->datname;
		db_cache_n++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* the copy, up to date: pg_database's invalidations are taken in (a transaction start does it) */
static void
db_cache_refresh(void)
{
	static bool registered = false;

	if (!registered)
	{
		CacheRegisterSyscacheCallback(DATABASEOID, db_cache_invalidate, (Datum) 0);
		registered = true;
	}
	if (db_cache_valid)
	{
		StartTransactionCommand();
		CommitTransactionCommand();
	}
	if (!db_cache_valid)
		db_cache_load();
}

/* the copy's entry for OID dbid, or else for name (NULL: no such database, as of the copy) */
static DbCacheEntry *
db_cache_find(Oid dbid, const char *name)
{
	for (int i = 0; i < db_cache_n; i++)
		if (OidIsValid(dbid) ? db_cache[i].oid == dbid : strcmp(NameStr(db_cache[i].name), name) == 0)
			return &db_cache[i];
	return NULL;
}

/*
 * The database an event names (by OID, else by name), if it exists. By OID, a hit is enough (the
 * OID is the database's for good; if it has been dropped since, its writer finds so); a name may
 * have changed hands (dropped, renamed, made again), so it is looked up in an up-to-date copy.
 */
static DbCacheEntry *
db_lookup(Oid dbid, const char *name)
{
	DbCacheEntry *c = db_cache_valid ? db_cache_find(dbid, name) : NULL;

	if (c == NULL || !OidIsValid(dbid))
	{
		db_cache_refresh();
		c = db_cache_find(dbid, name);
	}
	return c;
}

/* At start: every database that may have crm is probed by a writer. */
static void
note_all_databases(void)
{
	db_cache_refresh();
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int k = 0; k < db_cache_n; k++)
	{
		int			i;

		if (db_cache[k].is_template)
			continue;
		i = crm_aq_db_index(db_cache[k].oid, true);
		if (i >= 0)
			strlcpy(crm_aq->dbs[i].name, NameStr(db_cache[k].name), NAMEDATALEN);
	}
	LWLockRelease(crm_aq->lock);
}

/* --- dispatching --------------------------------------------------------------------------------- */

static uint64 dropped_with_db = 0;	/* events of databases dropped before they were written */

static int
free_slot(void)
{
	for (int k = 0; k < AQ_SLOTS; k++)
	{
		int			i = (free_hint + k) % AQ_SLOTS;

		if (crm_aq->slots[i].state == AQ_FREE)
		{
			free_hint = (i + 1) % AQ_SLOTS;
			return i;
		}
	}
	return -1;
}

static void
queue_for(int db, const QEvent *e, XLogRecPtr lsn, int at)
{
	AqSlot	   *s = &crm_aq->slots[at];

	s->db = db;
	s->lsn = lsn;
	s->ev = *e;
	s->state = AQ_QUEUED;
	crm_aq->used++;
	crm_aq->dbs[db].queued++;
	if (crm_aq->dbs[db].writer_latch)
		SetLatch(crm_aq->dbs[db].writer_latch);
}

/* Free every slot of database i (it is gone, or its events are not crm's); returns how many. */
static int
free_slots_of(int i)
{
	int			n = 0;

	for (int k = 0; k < AQ_SLOTS; k++)
		if (crm_aq->slots[k].state != AQ_FREE && crm_aq->slots[k].db == i)
		{
			crm_aq->slots[k].state = AQ_FREE;
			crm_aq->used--;
			n++;
		}
	crm_aq->dbs[i].queued = 0;
	return n;
}

/*
 * Databases whose events are read again (rewound): while re-reading WAL that was read before, the
 * reader jumps ahead as soon as each of them is held back again (a rewind costs the WAL of what it
 * hands over, not all the WAL since the database was first held back).
 */
static bool catching_up[AQ_MAXDB];
static int	n_catching_up = 0;
static XLogRecPtr read_high = InvalidXLogRecPtr;	/* how far WAL was ever read */
static XLogRecPtr nodb_held_from = InvalidXLogRecPtr;	/* events left in WAL: the table was full */
static bool nodb_catching_up = false;

/*
 * Queue an event for database i, or leave it in WAL for now (held_from: read again once it has
 * room) when it has its share of slots queued, slots run short, or it may have crm and has not been
 * probed yet. events up to handed_upto were queued already (WAL read again hands over nothing
 * twice). One database that cannot write holds back no other's events, and no event is dropped.
 */
static void
hand_to(int i, const QEvent *e, XLogRecPtr lsn, bool broadcast)
{
	AqDb	   *d = &crm_aq->dbs[i];
	int			at = -1;

	if (d->state == AQ_DB_NOCRM || d->state == AQ_DB_UNUSED || lsn <= d->handed_upto)
		return;
	if (XLogRecPtrIsInvalid(d->held_from) && d->queued < AQ_DB_CAP && !(broadcast && d->state == AQ_DB_UNKNOWN) &&
		(AQ_SLOTS - crm_aq->used > AQ_RESERVE || d->queued < AQ_DB_MIN))
		at = free_slot();
	if (at < 0)
	{
		if (XLogRecPtrIsInvalid(d->held_from))
			d->held_from = lsn;
		if (catching_up[i])
		{
			catching_up[i] = false;
			n_catching_up--;
		}
		return;
	}
	queue_for(i, e, lsn, at);
	d->handed_upto = lsn;
}

/* Databases that have room again: read WAL again from their first event left there. */
static void
rewind_held(void)
{
	XLogRecPtr	to = InvalidXLogRecPtr;

	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		AqDb	   *d = &crm_aq->dbs[i];

		if (XLogRecPtrIsInvalid(d->held_from))
			continue;
		if (d->state == AQ_DB_NOCRM || d->state == AQ_DB_UNUSED)
			d->held_from = InvalidXLogRecPtr;	/* nothing owed: not crm's */
		else if (d->state == AQ_DB_CRM && d->queued < AQ_DB_CAP / 2 &&
				 AQ_SLOTS - crm_aq->used > (d->queued < AQ_DB_MIN ? 0 : AQ_RESERVE))
		{
			if (XLogRecPtrIsInvalid(to) || d->held_from < to)
				to = d->held_from;
			d->held_from = InvalidXLogRecPtr;
			if (!catching_up[i])
			{
				catching_up[i] = true;
				n_catching_up++;
			}
		}
	}
	if (!XLogRecPtrIsInvalid(nodb_held_from) && crm_aq_db_room())
	{
		if (XLogRecPtrIsInvalid(to) || nodb_held_from < to)
			to = nodb_held_from;
		nodb_held_from = InvalidXLogRecPtr;
		if (!nodb_catching_up)
		{
			nodb_catching_up = true;
			n_catching_up++;
		}
	}
	LWLockRelease(crm_aq->lock);
	if (!XLogRecPtrIsInvalid(to) && to < next_lsn)
	{
		next_lsn = to;			/* a record's start */
		positioned = true;
	}
}

/*
 * Hand one event to its database's writer. Routed by the database's OID (a rename keeps it); an
 * event of a database dropped before it was written goes with it (counted). Only a login attempt
 * naming no database that exists (or none at all) goes to every database with crm — the name was
 * all there was to record it under; any other event would tell one database's auditors what
 * happened in another.
 */
static void
dispatch(const QEvent *e, XLogRecPtr lsn)
{
	bool		login = strcmp(e->action, "LOGIN") == 0 || strcmp(e->action, "LOGIN_FAILED") == 0;
	Oid			dbid = e->dbid;
	const char *name = NULL;
	int			idx = -1;

	if (OidIsValid(dbid) || e->db[0] != '\0')
	{
		LWLockAcquire(crm_aq->lock, LW_SHARED);
		idx = crm_aq_db_index(dbid, false);
		LWLockRelease(crm_aq->lock);
		if (idx < 0)
		{
			DbCacheEntry *c = db_lookup(dbid, e->db);

			if (c != NULL)
			{
				dbid = c->oid;
				name = NameStr(c->name);
			}
			else if (OidIsValid(dbid) || !login)
			{
				dropped_with_db++;
				return;
			}
		}
	}
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	if (OidIsValid(dbid))
	{
		idx = crm_aq_db_index(dbid, true);
		if (idx >= 0 && name != NULL)
			strlcpy(crm_aq->dbs[idx].name, name, NAMEDATALEN);
		if (idx >= 0)
			hand_to(idx, e, lsn, false);
		else
		{
			if (XLogRecPtrIsInvalid(nodb_held_from))
				nodb_held_from = lsn;	/* no room in the table: read again once there is */
			if (nodb_catching_up)
			{
				nodb_catching_up = false;
				n_catching_up--;
			}
		}
	}
	else
		for (int i = 0; i < AQ_MAXDB; i++)
			if (crm_aq->dbs[i].state == AQ_DB_CRM || crm_aq->dbs[i].state == AQ_DB_UNKNOWN)
				hand_to(i, e, lsn, true);
	LWLockRelease(crm_aq->lock);
}

/* --- reading WAL --------------------------------------------------------------------------------- */

static void
reader_reset(void)
{
	if (reader != NULL)
		XLogReaderFree(reader);
	reader = XLogReaderAllocate(wal_segment_size, NULL,
								XL_ROUTINE(.page_read = &read_local_xlog_page_no_wait,
										   .segment_open = &wal_segment_open,
										   .segment_close = &wal_segment_close),
								&reader_private);
	if (reader == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	positioned = false;
}

/*
 * Flush the WAL inserted so far: events written under synchronous_commit = off are not flushed by
 * the backends that wrote them (see crm_aq_wal_event), and only flushed WAL is read.
 */
static void
flush_inserted(void)
{
	XLogRecPtr	inserted;

	if (RecoveryInProgress())
		return;
	inserted = GetXLogInsertRecPtr();
	/*
	 * At the first usable byte of a page nothing is on that page yet (not even its header, which
	 * is written with the first record): flushing "to" there would ask for bytes never written
	 * ("xlog flush request ... is not satisfied", seen after pg_switch_wal()).
	 */
	if (inserted % XLOG_BLCKSZ == (XLogSegmentOffset(inserted, wal_segment_size) < XLOG_BLCKSZ ?
								   SizeOfXLogLongPHD : SizeOfXLogShortPHD))
		inserted -= inserted % XLOG_BLCKSZ;
	if (inserted > GetFlushRecPtr(NULL))
		XLogFlush(inserted);
}

/*
 * Read crm's records from next_lsn up to what is flushed; false when it stopped before (shutdown).
 * WAL read again for databases that were held back (rewound) is left as soon as each of them is
 * held back again: the rest of it was handed over when first read.
 */
static bool
read_events(void)
{
	XLogRecPtr	end = GetFlushRecPtr(NULL);

	if (next_lsn >= end)
		return true;
	reader_private.end_of_wal = false;
	if (!positioned)
	{
		XLogRecPtr	first = XLogFindNextRecord(reader, next_lsn);

		if (XLogRecPtrIsInvalid(first))
			return true;		/* no complete record there yet */
		next_lsn = first;
		positioned = true;
	}
	XLogBeginRead(reader, next_lsn);
	while (next_lsn < end && !ShutdownRequestPending)
	{
		char	   *err = NULL;
		XLogRecord *rec;

		reader_private.end_of_wal = false;
		rec = XLogReadRecord(reader, &err);
		if (rec == NULL)
		{
			if (err != NULL && !reader_private.end_of_wal)
				ereport(LOG, (errmsg("crm audit worker: could not read WAL at %X/%X: %s",
									 LSN_FORMAT_ARGS(next_lsn), err)));
			return true;
		}
		if (XLogRecGetRmid(reader) == CRM_RMGR_ID)
		{
			QEvent		e;

			if (!crm_aq_decode(XLogRecGetInfo(reader), XLogRecGetData(reader), XLogRecGetDataLen(reader), &e))
				ereport(LOG, (errmsg("crm audit worker: malformed audit record at %X/%X",
									 LSN_FORMAT_ARGS(reader->ReadRecPtr))));
			else
				dispatch(&e, reader->ReadRecPtr);
		}
		next_lsn = reader->EndRecPtr;
		if (next_lsn >= read_high)
		{
			read_high = next_lsn;
			memset(catching_up, 0, sizeof(catching_up));
			nodb_catching_up = false;
			n_catching_up = 0;
		}
		else if (n_catching_up == 0)
		{
			next_lsn = read_high;	/* nobody is owed anything before it */
			XLogBeginRead(reader, next_lsn);
		}
	}
	return !ShutdownRequestPending;
}

/* --- the ring, and what was lost ----------------------------------------------------------------- */

static void
drain_ring(void)
{
	for (;;)
	{
		QEvent		e;
		bool		have = false;

		SpinLockAcquire(&crm_aq->ring_lock);
		if (crm_aq->ring_count > 0)
		{
			e = crm_aq->ring[crm_aq->ring_head];
			crm_aq->ring_head = (crm_aq->ring_head + 1) % AQ_RING;
			crm_aq->ring_count--;
			have = true;
		}
		SpinLockRelease(&crm_aq->ring_lock);
		if (!have)
			break;
		if (!crm_aq_wal_event(&e))
			pg_atomic_fetch_add_u64(&crm_aq->lost, 1);
	}
	if (pg_atomic_read_u64(&crm_aq->lost) > 0)
	{
		uint64		lost = pg_atomic_exchange_u64(&crm_aq->lost, 0);
		char		d[200];

		snprintf(d, sizeof(d), "{\"operation\": \"audit events lost\", \"lost_events\": %llu}", (unsigned long long) lost);
		(void) crm_auditq_push("", "MAINTENANCE", NULL, 0, 0, "", "", "", "crm audit worker", d);
	}
}

/* --- writers ------------------------------------------------------------------------------------- */

static bool
writer_alive(int i)
{
	pid_t		pid;

	if (writers[i] == NULL)
		return false;
	if (GetBackgroundWorkerPid(writers[i], &pid) == BGWH_STOPPED)
	{
		pfree(writers[i]);
		writers[i] = NULL;
		return false;
	}
	return true;
}

static void
start_writer(int i, Oid dbid, const char *name)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(w.bgw_library_name, "crm", BGW_MAXLEN);
	strlcpy(w.bgw_function_name, "crm_audit_writer_main", BGW_MAXLEN);
	snprintf(w.bgw_name, BGW_MAXLEN, "crm audit writer for %s", name);
	strlcpy(w.bgw_type, "crm audit writer", BGW_MAXLEN);
	snprintf(w.bgw_extra, BGW_EXTRALEN, "%u", dbid);
	w.bgw_main_arg = Int32GetDatum(i);
	w.bgw_notify_pid = MyProcPid;
	if (RegisterDynamicBackgroundWorker(&w, &writers[i]))
		writer_started[i] = GetCurrentTimestamp();
	else
		writers[i] = NULL;		/* no worker slot free: tried again on the next round */
}

/*
 * No background worker slot was free for database i's writer: ask an idle writer (nothing queued,
 * nothing to seal) to leave, so that a burst of databases with events is not held up by writers
 * waiting out their idle time.
 */
static void
make_room(int i, TimestampTz now)
{
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int j = 0; j < AQ_MAXDB; j++)
	{
		AqDb	   *d = &crm_aq->dbs[j];

		if (j != i && writers[j] != NULL && d->writer_latch != NULL && d->queued == 0 && !d->dirty &&
			d->paused_until <= now)
		{
			d->paused_until = now + USECS_PER_SEC;
			SetLatch(d->writer_latch);
			break;
		}
	}
	LWLockRelease(crm_aq->lock);
}

/*
 * Start the writers that have work: queued events, entries to seal, or a database to probe. A
 * database without crm gives up its events; one found gone is forgotten, and its events with it.
 */
static void
run_writers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Oid			ids[AQ_MAXDB];

	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		AqDb	   *d = &crm_aq->dbs[i];

		ids[i] = InvalidOid;
		if (d->state == AQ_DB_NOCRM && d->queued > 0)
			(void) free_slots_of(i);
		if (d->state == AQ_DB_NOCRM && now >= d->recheck_at)
			d->state = AQ_DB_UNKNOWN;
		if (d->state == AQ_DB_UNKNOWN || (d->state == AQ_DB_CRM && (d->queued > 0 || d->dirty)))
			ids[i] = d->dbid;
	}
	LWLockRelease(crm_aq->lock);
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		DbCacheEntry *c;

		if (!OidIsValid(ids[i]) || writer_alive(i) || crm_aq->dbs[i].paused_until > now)
			continue;
		/* a writer that just failed is given a second before the next try */
		if (writer_started[i] != 0 && !TimestampDifferenceExceeds(writer_started[i], now, 1000))
			continue;
		db_cache_refresh();
		c = db_cache_find(ids[i], NULL);
		LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
		if (crm_aq->dbs[i].dbid != ids[i])
			c = NULL;			/* (the entry was taken for another database meanwhile) */
		else if (c == NULL)
		{
			/* dropped: its events go with it (no other database may see them) */
			dropped_with_db += free_slots_of(i);
			memset(&crm_aq->dbs[i], 0, sizeof(AqDb));
		}
		else
			strlcpy(crm_aq->dbs[i].name, NameStr(c->name), NAMEDATALEN);	/* (renamed?) */
		LWLockRelease(crm_aq->lock);
		if (c == NULL)
			continue;
		start_writer(i, ids[i], NameStr(c->name));
		if (writers[i] == NULL)
			make_room(i, now);
	}
	if (dropped_with_db > 0)
	{
		ereport(LOG, (errmsg("crm audit worker: %llu audit events of dropped databases were dropped with them",
							 (unsigned long long) dropped_with_db)));
		dropped_with_db = 0;
	}
}

/* The oldest event not yet written, or (none) where reading goes on. */
static XLogRecPtr
oldest_needed(void)
{
	XLogRecPtr	min = next_lsn;

	if (!XLogRecPtrIsInvalid(nodb_held_from) && nodb_held_from < min)
		min = nodb_held_from;
	LWLockAcquire(crm_aq->lock, LW_SHARED);
	for (int i = 0; i < AQ_MAXDB; i++)
		if (!XLogRecPtrIsInvalid(crm_aq->dbs[i].held_from) && crm_aq->dbs[i].held_from < min)
			min = crm_aq->dbs[i].held_from;
	for (int i = 0; i < AQ_SLOTS; i++)
		if (crm_aq->slots[i].state != AQ_FREE && crm_aq->slots[i].lsn < min)
			min = crm_aq->slots[i].lsn;
	LWLockRelease(crm_aq->lock);
	return min;
}

void
crm_audit_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("crm audit worker");
	/* a new worker reads again what an earlier one had queued (its writers skip what they wrote) */
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AQ_SLOTS; i++)
		crm_aq->slots[i].state = AQ_FREE;
	crm_aq->used = 0;
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		crm_aq->dbs[i].queued = 0;
		crm_aq->dbs[i].handed_upto = InvalidXLogRecPtr;
		crm_aq->dbs[i].held_from = InvalidXLogRecPtr;
	}
	LWLockRelease(crm_aq->lock);
	crm_aq->worker_latch = MyLatch;
	slot_setup();
	reader_reset();
	note_all_databases();
	while (!ShutdownRequestPending)
	{
		bool		caught_up;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		drain_ring();
		flush_inserted();
		caught_up = read_events();
		run_writers();
		rewind_held();
		slot_advance(oldest_needed());
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, caught_up ? 200L : 20L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	crm_aq->worker_latch = NULL;
	/*
	 * Exit status 1: the postmaster starts it again a second later. With 0 it never would, and a
	 * pg_terminate_backend() of it (a DBA ending "all other sessions") would stop every database's
	 * events being written until the server restarts. At shutdown the postmaster restarts nothing.
	 */
	proc_exit(1);
}
