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
#include "utils/memutils.h"
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
		ReplicationSlotAcquire(CRM_SLOT_NAME, true);
	else
	{
		ReplicationSlotCreate(CRM_SLOT_NAME, false, RS_PERSISTENT, false);
		ReplicationSlotReserveWal();
		ReplicationSlotMarkDirty();
		ReplicationSlotSave();
	}
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
 * Whether a database of this name exists. A heap scan of pg_database: without a database of its
 * own, this process has no index of the shared catalogs (like the autovacuum launcher).
 */
static bool
db_exists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		exists = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!exists && (tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		exists = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tup))->datname), name) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return exists;
}

/* At start: every database that may have crm is probed by a writer. */
static void
note_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);

		if (!d->datistemplate)
			(void) crm_aq_db_index(NameStr(d->datname), true);
	}
	LWLockRelease(crm_aq->lock);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* --- dispatching --------------------------------------------------------------------------------- */

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
	strlcpy(s->ev.db, crm_aq->dbs[db].name, NAMEDATALEN);
	s->state = AQ_QUEUED;
	crm_aq->dbs[db].queued++;
	if (crm_aq->dbs[db].writer_latch)
		SetLatch(crm_aq->dbs[db].writer_latch);
}

/*
 * This worker's own bookkeeping per database: events up to handed_upto were queued for it (so
 * WAL read again hands over nothing twice); held_from: its events from there on are left in WAL
 * for now (it has its share of slots queued, or it may have crm and has not been probed yet) and
 * are read again once it has room. One database that cannot write holds back no other's events.
 */
#define AQ_DB_CAP (AQ_SLOTS / 4)
static char known_name[AQ_MAXDB][NAMEDATALEN];
static XLogRecPtr handed_upto[AQ_MAXDB];
static XLogRecPtr held_from[AQ_MAXDB];
static int	seen_queued[AQ_MAXDB];	/* its queued count after this worker last handed it events */
static TimestampTz drained_at[AQ_MAXDB];	/* when its writer was last seen taking events away */

/*
 * A database at its share whose writer is keeping up (it took events away in the last two
 * seconds): reading waits for it at this record, rather than reading on and coming back here (a
 * single busy database made the worker read every page of WAL a dozen times: measured, a fifth of
 * a core at 13,000 events a second). A writer that stopped taking events is passed by.
 */
#define AQ_DRAIN_WAIT_MS 2000

static bool
keeping_up(int i, const AqDb *d)
{
	TimestampTz now = GetCurrentTimestamp();

	if (d->queued < seen_queued[i])
		drained_at[i] = now;
	seen_queued[i] = d->queued;
	return d->state == AQ_DB_CRM && !TimestampDifferenceExceeds(drained_at[i], now, AQ_DRAIN_WAIT_MS);
}

static void
track(int i)
{
	if (strcmp(known_name[i], crm_aq->dbs[i].name) != 0)
	{
		strlcpy(known_name[i], crm_aq->dbs[i].name, NAMEDATALEN);
		handed_upto[i] = InvalidXLogRecPtr;
		held_from[i] = InvalidXLogRecPtr;
		seen_queued[i] = 0;
		drained_at[i] = 0;
	}
}

/* Queue an event for database i, or leave it in WAL; false: no free slot at all (read it again). */
static bool
hand_to(int i, const QEvent *e, XLogRecPtr lsn, bool broadcast)
{
	AqDb	   *d = &crm_aq->dbs[i];
	int			at;

	track(i);
	if (d->state == AQ_DB_NOCRM || d->state == AQ_DB_UNUSED || lsn <= handed_upto[i])
		return true;
	if (XLogRecPtrIsInvalid(held_from[i]) && d->queued >= AQ_DB_CAP && keeping_up(i, d))
		return false;			/* read it again once its writer has made room */
	if (!XLogRecPtrIsInvalid(held_from[i]) || d->queued >= AQ_DB_CAP || (broadcast && d->state == AQ_DB_UNKNOWN))
	{
		if (XLogRecPtrIsInvalid(held_from[i]))
			held_from[i] = lsn;
		return true;
	}
	at = free_slot();
	if (at < 0)
		return false;
	queue_for(i, e, lsn, at);
	handed_upto[i] = lsn;
	seen_queued[i] = d->queued;
	if (drained_at[i] == 0)
		drained_at[i] = GetCurrentTimestamp();	/* its writer gets two seconds to start */
	return true;
}

/* Databases that have room again: read WAL again from their first event left there. */
static void
rewind_held(void)
{
	XLogRecPtr	to = InvalidXLogRecPtr;

	LWLockAcquire(crm_aq->lock, LW_SHARED);
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		AqDb	   *d = &crm_aq->dbs[i];

		track(i);
		if (XLogRecPtrIsInvalid(held_from[i]))
			continue;
		if (d->state == AQ_DB_NOCRM || d->state == AQ_DB_UNUSED)
			held_from[i] = InvalidXLogRecPtr;	/* nothing owed: not crm's */
		else if (d->state == AQ_DB_CRM && d->queued < AQ_DB_CAP / 2)
		{
			if (XLogRecPtrIsInvalid(to) || held_from[i] < to)
				to = held_from[i];
			held_from[i] = InvalidXLogRecPtr;
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
 * Hand one event to its database's writer (or, for no database or one that does not exist, to
 * every database with crm). Returns false when it cannot be handed over yet (no free slot): the
 * caller reads it again later.
 */
static bool
dispatch(const QEvent *e, XLogRecPtr lsn)
{
	bool		broadcast = e->db[0] == '\0';
	int			idx = -1;
	bool		ok = true;

	if (!broadcast)
	{
		LWLockAcquire(crm_aq->lock, LW_SHARED);
		idx = crm_aq_db_index(e->db, false);
		LWLockRelease(crm_aq->lock);
		/*
		 * A failed login may name a database that was dropped or renamed while its entry is still
		 * here: it does not exist, so the attempt goes to every database with crm (else password
		 * guessing with such a name would leave no trace).
		 */
		if ((idx < 0 || strcmp(e->action, "LOGIN_FAILED") == 0) && !db_exists(e->db))
			broadcast = true;
	}
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	if (!broadcast)
	{
		idx = crm_aq_db_index(e->db, true);
		ok = idx >= 0 && hand_to(idx, e, lsn, false);	/* (no room for another database yet) */
	}
	else
		for (int i = 0; i < AQ_MAXDB; i++)
			if (crm_aq->dbs[i].state == AQ_DB_CRM || crm_aq->dbs[i].state == AQ_DB_UNKNOWN)
				ok = hand_to(i, e, lsn, true) && ok;
	LWLockRelease(crm_aq->lock);
	return ok;
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
	if (inserted > GetFlushRecPtr(NULL))
		XLogFlush(inserted);
}

/* Read crm's records from next_lsn up to what is flushed; false when it stopped at a full queue. */
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

			if (!crm_aq_decode(XLogRecGetData(reader), XLogRecGetDataLen(reader), &e))
				ereport(LOG, (errmsg("crm audit worker: malformed audit record at %X/%X",
									 LSN_FORMAT_ARGS(reader->ReadRecPtr))));
			else if (!dispatch(&e, reader->ReadRecPtr))
				return false;	/* read it again once there is room */
		}
		next_lsn = reader->EndRecPtr;
	}
	return true;
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
start_writer(int i, const char *name)
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
	strlcpy(w.bgw_extra, name, BGW_EXTRALEN);
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
 * database without crm gives up its events; one found gone is forgotten.
 */
static void
run_writers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	char		names[AQ_MAXDB][NAMEDATALEN];
	bool		want[AQ_MAXDB];

	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		AqDb	   *d = &crm_aq->dbs[i];

		want[i] = false;
		if (d->state == AQ_DB_NOCRM && d->queued > 0)
		{
			for (int k = 0; k < AQ_SLOTS; k++)
				if (crm_aq->slots[k].state != AQ_FREE && crm_aq->slots[k].db == i)
					crm_aq->slots[k].state = AQ_FREE;
			d->queued = 0;
		}
		if (d->state == AQ_DB_NOCRM && now >= d->recheck_at)
			d->state = AQ_DB_UNKNOWN;
		if (d->state == AQ_DB_UNKNOWN || (d->state == AQ_DB_CRM && (d->queued > 0 || d->dirty)))
		{
			want[i] = true;
			strlcpy(names[i], d->name, NAMEDATALEN);
		}
	}
	LWLockRelease(crm_aq->lock);
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		if (!want[i] || writer_alive(i) || crm_aq->dbs[i].paused_until > now)
			continue;
		/* a writer that just failed is given a second before the next try */
		if (writer_started[i] != 0 && !TimestampDifferenceExceeds(writer_started[i], now, 1000))
			continue;
		if (!db_exists(names[i]))
		{
			/* gone (dropped, renamed): forget it, so that events naming it count as no database */
			LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
			if (strcmp(crm_aq->dbs[i].name, names[i]) == 0)
			{
				for (int k = 0; k < AQ_SLOTS; k++)
					if (crm_aq->slots[k].state != AQ_FREE && crm_aq->slots[k].db == i)
						crm_aq->slots[k].state = AQ_FREE;
				memset(&crm_aq->dbs[i], 0, sizeof(AqDb));
			}
			LWLockRelease(crm_aq->lock);
			continue;
		}
		start_writer(i, names[i]);
		if (writers[i] == NULL)
			make_room(i, now);
	}
}

/* The oldest event not yet written, or (none) where reading goes on. */
static XLogRecPtr
oldest_needed(void)
{
	XLogRecPtr	min = next_lsn;

	for (int i = 0; i < AQ_MAXDB; i++)
		if (!XLogRecPtrIsInvalid(held_from[i]) && held_from[i] < min)
			min = held_from[i];
	LWLockAcquire(crm_aq->lock, LW_SHARED);
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
	for (int i = 0; i < AQ_MAXDB; i++)
		crm_aq->dbs[i].queued = 0;
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
