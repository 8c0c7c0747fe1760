/*
 * auditq.c: audit events that must outlive their transaction — producers' side.
 *
 * LOGIN and LOGIN_FAILED, DENIED, READ_SENSITIVE, EXPORT, ACT_AS and some MAINTENANCE entries happen
 * whether or not their transaction commits (a failed login has no transaction at all). Each is
 * written to WAL at once, as a record of crm's own resource manager: a record outside any
 * transaction, that no rollback takes back, and that is flushed before the statement returns when
 * synchronous_commit asks commits to be (so an event is as durable as a commit). The audit worker
 * (auditwal.c) reads them back and each database's writer (auditwriter.c) puts them into
 * crm.audit_log. A process that cannot write WAL (one refused before it has a PGPROC, e.g. "sorry,
 * too many clients already") hands its event to a small ring in shared memory that the audit
 * worker writes to WAL for it. What cannot be written at all is counted and recorded.
 */
#include "crm.h"
#include "auditq_int.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "commands/dbcommands.h"
#include "common/ip.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/syncrep.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

AuditQ	   *crm_aq = NULL;
/* synchronous_commit as the server's configuration set it at start: a session cannot lower it */
static int	server_synchronous_commit = SYNCHRONOUS_COMMIT_ON;
static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;
int			crm_audit_max_value_bytes = 8192;
int			crm_audit_max_ids = 100;
int			crm_export_threshold = 10000;

static void
auditq_shmem_request(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuditQ)));
	RequestNamedLWLockTranche("crm audit queue", 1);
}

static void
auditq_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup)
		prev_shmem_startup();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	crm_aq = ShmemInitStruct("crm audit queue", sizeof(AuditQ), &found);
	if (!found)
	{
		memset(crm_aq, 0, sizeof(AuditQ));
		crm_aq->lock = &(GetNamedLWLockTranche("crm audit queue"))->lock;
		pg_atomic_init_u64(&crm_aq->lost, 0);
		SpinLockInit(&crm_aq->ring_lock);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* --- the WAL record ------------------------------------------------------------------------------ */

/*
 * A record: this header, then the eight strings (without their NULs) in this order. The header of
 * CRM_XLOG_EVENT (0.1) has no dbid; CRM_XLOG_EVENT_DB's has.
 */
typedef struct CrmWalEvent
{
	TimestampTz at;
	int64		principal;
	int64		record_id;
	uint16		len[8];
} CrmWalEvent;

typedef struct CrmWalEventDb
{
	TimestampTz at;
	int64		principal;
	int64		record_id;
	uint16		len[8];
	Oid			dbid;
} CrmWalEventDb;

#define EV_STRINGS(e) { (e)->db, (e)->session_user, (e)->current_user, (e)->client_addr, (e)->app, \
						(e)->action, (e)->object, (e)->detail }
static const size_t ev_sizes[8] = {NAMEDATALEN, NAMEDATALEN, NAMEDATALEN, 64, 64, 24, NAMEDATALEN, AQ_DETAIL_LEN};

/* Write one event to WAL; returns false when this process cannot (it then goes to the ring). */
bool
crm_aq_wal_event(const QEvent *e)
{
	static char buf[sizeof(CrmWalEventDb) + 3 * NAMEDATALEN + 64 + 64 + 24 + NAMEDATALEN + AQ_DETAIL_LEN];
	CrmWalEventDb *h = (CrmWalEventDb *) buf;
	const char *s[8] = EV_STRINGS(e);
	uint32		off = sizeof(CrmWalEventDb);
	XLogRecPtr	lsn,
				last_rec,
				last_end;

	if (MyProc == NULL || CritSectionCount > 0 || RecoveryInProgress())
		return false;
	h->at = e->at;
	h->principal = e->principal;
	h->record_id = e->record_id;
	h->dbid = e->dbid;
	for (int i = 0; i < 8; i++)
	{
		size_t		n = strnlen(s[i], ev_sizes[i] - 1);

		h->len[i] = (uint16) n;
		memcpy(buf + off, s[i], n);
		off += n;
	}
	/*
	 * The record is not part of the transaction: keep it from making a read-only transaction look
	 * as if it wrote WAL, whose commit would then wake the WAL writer with a signal (measured: one
	 * kill() per statement, a sixth of a sensitive read's time). Its durability is handled here.
	 */
	last_rec = ProcLastRecPtr;
	last_end = XactLastRecEnd;
	XLogBeginInsert();
	XLogRegisterData(buf, off);
	lsn = XLogInsert(CRM_RMGR_ID, CRM_XLOG_EVENT_DB);
	ProcLastRecPtr = last_rec;
	XactLastRecEnd = last_end;
	/*
	 * As durable as a commit would be, under the session's synchronous_commit or the server's,
	 * whichever asks more (SET synchronous_commit = off must not make one's own reads forgettable).
	 */
	if (Max(synchronous_commit, server_synchronous_commit) > SYNCHRONOUS_COMMIT_OFF)
	{
		XLogFlush(lsn);
		if (Max(synchronous_commit, server_synchronous_commit) > SYNCHRONOUS_COMMIT_LOCAL_FLUSH &&
			MyBackendType == B_BACKEND)
			SyncRepWaitForLSN(lsn, false);
	}
	/*
	 * Else nothing more: the audit worker flushes what has been inserted every time it looks for
	 * events (at least every 200 ms), as soon as an asynchronous commit would reach disk.
	 * XLogSetAsyncXactLSN() would wake the WAL writer, which writes but does not flush between its
	 * rounds, with a signal for nearly every statement (measured: one kill() per statement, a sixth
	 * of a sensitive read's time).
	 */
	return true;
}

/* Decode a record into an event (false: not one of ours, or malformed). */
bool
crm_aq_decode(uint8 info, const char *data, uint32 len, QEvent *e)
{
	const CrmWalEvent *h = (const CrmWalEvent *) data;
	char	   *s[8] = EV_STRINGS(e);
	bool		with_db = (info & ~XLR_INFO_MASK) == CRM_XLOG_EVENT_DB;
	uint32		off = with_db ? sizeof(CrmWalEventDb) : sizeof(CrmWalEvent);

	if ((info & ~XLR_INFO_MASK) != CRM_XLOG_EVENT && !with_db)
		return false;
	if (len < off)
		return false;
	memset(e, 0, sizeof(QEvent));
	e->dbid = with_db ? ((const CrmWalEventDb *) data)->dbid : InvalidOid;
	e->at = h->at;
	e->principal = h->principal;
	e->record_id = h->record_id;
	for (int i = 0; i < 8; i++)
	{
		if (h->len[i] >= ev_sizes[i] || off + h->len[i] > len)
			return false;
		memcpy(s[i], data + off, h->len[i]);
		s[i][h->len[i]] = '\0';
		off += h->len[i];
	}
	return true;
}

static void
crm_rmgr_redo(XLogReaderState *record)
{
	/* nothing to replay: the audit worker reads these records where they lie */
}

static void
crm_rmgr_desc(StringInfo buf, XLogReaderState *record)
{
	QEvent		e;

	if (crm_aq_decode(XLogRecGetInfo(record), XLogRecGetData(record), XLogRecGetDataLen(record), &e))
		appendStringInfo(buf, "%s db %u \"%s\" user \"%s\" object \"%s\" record %lld", e.action, e.dbid, e.db, e.session_user,
						 e.object, (long long) e.record_id);
}

static const char *
crm_rmgr_identify(uint8 info)
{
	if ((info & ~XLR_INFO_MASK) == CRM_XLOG_EVENT_DB)
		return "AUDIT_EVENT_DB";
	return (info & ~XLR_INFO_MASK) == CRM_XLOG_EVENT ? "AUDIT_EVENT" : NULL;
}

static RmgrData crm_rmgr = {
	.rm_name = "crm",
	.rm_redo = crm_rmgr_redo,
	.rm_desc = crm_rmgr_desc,
	.rm_identify = crm_rmgr_identify,
};

/* --- producers ----------------------------------------------------------------------------------- */

static void
copy_str(char *dst, const char *src, size_t n)
{
	strlcpy(dst, src ? src : "", n);
}

/* a process without a PGPROC: into the ring, which the audit worker writes to WAL */
static bool
ring_push(const QEvent *e)
{
	bool		ok = false;

	SpinLockAcquire(&crm_aq->ring_lock);
	if (crm_aq->ring_count < AQ_RING)
	{
		crm_aq->ring[(crm_aq->ring_head + crm_aq->ring_count) % AQ_RING] = *e;
		crm_aq->ring_count++;
		ok = true;
	}
	SpinLockRelease(&crm_aq->ring_lock);
	if (!ok)
		pg_atomic_fetch_add_u64(&crm_aq->lost, 1);
	return ok;
}

/*
 * The client's address as crm records it: numeric (remote_host is a host name when log_hostname is
 * on, which no inet column takes); "" for a Unix socket or no client.
 */
void
crm_client_addr(Port *port, char *addr, size_t size)
{
	addr[0] = '\0';
	if (port == NULL || port->raddr.addr.ss_family == AF_UNIX || port->raddr.salen == 0)
		return;
	if (pg_getnameinfo_all(&port->raddr.addr, port->raddr.salen, addr, size, NULL, 0, NI_NUMERICHOST) != 0)
		addr[0] = '\0';
}

/* this database's name, once known (no catalog access outside a transaction) */
static const char *
my_db_name(void)
{
	static char *db = NULL;

	if (db == NULL && MyProcPort && MyProcPort->database_name)
		return MyProcPort->database_name;
	if (db == NULL && OidIsValid(MyDatabaseId) && IsTransactionState())
	{
		char	   *n = get_database_name(MyDatabaseId);

		if (n != NULL)
			db = MemoryContextStrdup(TopMemoryContext, n);
	}
	return db ? db : "";
}

/*
 * Record one event (never throws on its own: also called from error reporting). db NULL: this
 * database. Returns false when the event could not be kept (it is then counted, and the count is
 * recorded later).
 */
bool
crm_auditq_push(const char *db, const char *action, const char *object, int64 record_id, int64 principal,
				const char *session_user, const char *current_user, const char *client_addr, const char *app,
				const char *detail)
{
	static QEvent e;
	bool		ok;

	if (crm_aq == NULL)
		return false;
	memset(&e, 0, offsetof(QEvent, detail));
	e.at = GetCurrentTimestamp();
	e.principal = principal;
	e.record_id = record_id;
	copy_str(e.db, db ? db : my_db_name(), NAMEDATALEN);
	/*
	 * The database it happened in, which a rename does not change: this process's, once it has one
	 * (a login refused before that names one by name only). "": every database with crm.
	 */
	e.dbid = (db == NULL || db[0] != '\0') ? MyDatabaseId : InvalidOid;
	copy_str(e.session_user, session_user, NAMEDATALEN);
	copy_str(e.current_user, current_user, NAMEDATALEN);
	copy_str(e.client_addr, client_addr, sizeof(e.client_addr));
	copy_str(e.app, app, sizeof(e.app));
	copy_str(e.action, action, sizeof(e.action));
	copy_str(e.object, object, NAMEDATALEN);
	/* never a cut-off JSON text (the writer must be able to store every event) */
	if (detail != NULL && strlen(detail) >= AQ_DETAIL_LEN)
		snprintf(e.detail, AQ_DETAIL_LEN, "{\"truncated\": true, \"bytes\": %zu}", strlen(detail));
	else
		copy_str(e.detail, detail, AQ_DETAIL_LEN);
	/*
	 * The audit worker finds WAL events on its own (it looks every 200 ms; an event is not readable
	 * before its WAL is flushed anyway): waking it for each would cost every statement a signal.
	 */
	if (crm_aq_wal_event(&e))
		return true;
	ok = ring_push(&e);
	if (crm_aq->worker_latch)
		SetLatch(crm_aq->worker_latch);
	return ok;
}

/*
 * The index of a database in the shared table (-1: not there, or no room). add: make room, reusing
 * the entry of a database without crm, or of one with nothing in flight (no events queued or left
 * in WAL, no writer, nothing to seal): it comes back as not yet probed. Called with crm_aq->lock
 * held, exclusively when add.
 */
static bool
db_entry_idle(const AqDb *d, TimestampTz now)
{
	return d->queued == 0 && d->writer_pid == 0 && !d->dirty && XLogRecPtrIsInvalid(d->held_from) &&
		d->paused_until <= now && (d->state == AQ_DB_NOCRM || d->state == AQ_DB_CRM);
}

/* whether the table has room for another database (called with crm_aq->lock held) */
bool
crm_aq_db_room(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < AQ_MAXDB; i++)
		if (crm_aq->dbs[i].state == AQ_DB_UNUSED || db_entry_idle(&crm_aq->dbs[i], now))
			return true;
	return false;
}

int
crm_aq_db_index(Oid dbid, bool add)
{
	int			free_at = -1;
	int			idle_at = -1;
	TimestampTz now = add ? GetCurrentTimestamp() : 0;

	if (!OidIsValid(dbid))
		return -1;
	for (int i = 0; i < AQ_MAXDB; i++)
	{
		AqDb	   *d = &crm_aq->dbs[i];

		if (d->state == AQ_DB_UNUSED)
		{
			if (free_at < 0)
				free_at = i;
			continue;
		}
		if (d->dbid == dbid)
			return i;
		if (add && idle_at < 0 && db_entry_idle(d, now))
			idle_at = i;
	}
	if (free_at < 0)
		free_at = idle_at;
	if (!add || free_at < 0)
		return -1;
	memset(&crm_aq->dbs[free_at], 0, sizeof(AqDb));
	crm_aq->dbs[free_at].dbid = dbid;
	crm_aq->dbs[free_at].state = AQ_DB_UNKNOWN;
	return free_at;
}

/* This database has entries to seal (its writer seals them, the audit worker starts it). */
void
crm_auditq_mark_dirty(void)
{
	static LocalTransactionId marked = InvalidLocalTransactionId;
	int			i;

	if (crm_aq == NULL || !OidIsValid(MyDatabaseId) || marked == MyProc->lxid)
		return;
	marked = MyProc->lxid;
	LWLockAcquire(crm_aq->lock, LW_SHARED);
	i = crm_aq_db_index(MyDatabaseId, false);
	if (i >= 0 && crm_aq->dbs[i].dirty)
	{
		LWLockRelease(crm_aq->lock);
		return;
	}
	LWLockRelease(crm_aq->lock);
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	i = crm_aq_db_index(MyDatabaseId, true);
	if (i >= 0)
		crm_aq->dbs[i].dirty = true;
	LWLockRelease(crm_aq->lock);
	if (crm_aq->worker_latch)
		SetLatch(crm_aq->worker_latch);
}

/* An event about this session, with its identity. */
void
crm_auditq_session_event(const char *action, const char *object, int64 record_id, int64 principal, const char *detail)
{
	char		addr[64] = "";
	static Oid	user = InvalidOid;
	static NameData user_name;

	/*
	 * Also called while a transaction aborts or after it committed (reads that happened stay
	 * read): no catalog lookup then — names come from the connection and from the last lookup.
	 */
	crm_client_addr(MyProcPort, addr, sizeof(addr));
	if (IsTransactionState() && OidIsValid(GetUserId()) && user != GetUserId())
	{
		char	   *n = GetUserNameFromId(GetUserId(), true);

		namestrcpy(&user_name, n ? n : "");
		user = GetUserId();
	}
	(void) crm_auditq_push(NULL, action, object, record_id, principal,
						   MyProcPort && MyProcPort->user_name ? MyProcPort->user_name : "",
						   NameStr(user_name), addr, application_name, detail);
}


/*
 * Run one of crm's per-database workers (function, in library crm, with the database's name as its
 * argument) and wait until it has finished. Returns false when no worker slot was free.
 */
bool
crm_run_db_worker(const char *function, const char *type, const char *db)
{
	BackgroundWorker w;
	BackgroundWorkerHandle *h;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(w.bgw_library_name, "crm", BGW_MAXLEN);
	strlcpy(w.bgw_function_name, function, BGW_MAXLEN);
	snprintf(w.bgw_name, BGW_MAXLEN, "%s for %s", type, db);
	strlcpy(w.bgw_type, type, BGW_MAXLEN);
	strlcpy(w.bgw_extra, db, BGW_EXTRALEN);
	w.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&w, &h))
		return false;
	crm_wait_worker(h);
	return true;
}


/*
 * Wait for a dynamic worker to finish, but not through a shutdown: the postmaster starts no worker
 * once it is shutting down, and WaitForBackgroundWorkerStartup would then wait for ever. The
 * postmaster signals us (bgw_notify_pid) when the worker starts and stops.
 */
void
crm_wait_worker(BackgroundWorkerHandle *h)
{
	for (;;)
	{
		pid_t		pid;
		BgwHandleStatus st = GetBackgroundWorkerPid(h, &pid);

		if (st == BGWH_STOPPED || st == BGWH_POSTMASTER_DIED)
			return;
		if (ShutdownRequestPending)
		{
			TerminateBackgroundWorker(h);
			return;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 200L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}



void
crm_auditq_init(void)
{
	BackgroundWorker w;

	DefineCustomIntVariable("crm.audit_interval", "How often the audit writers seal the chain (ms).",
							NULL, &crm_audit_interval_ms, 1000, 100, 60000, PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("crm.audit_writer_fault", "Testing only: audit events of this action fail to insert (and are quarantined).",
							   NULL, &crm_audit_writer_fault, "", PGC_SIGHUP, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
	DefineCustomIntVariable("crm.audit_max_ids", "READ_SENSITIVE/EXPORT events list at most this many record ids; beyond it, a digest.",
							NULL, &crm_audit_max_ids, 100, 0, 1000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("crm.audit_max_value_bytes", "A value longer than this is audited as its SHA-256 hash and length, not the value.",
							NULL, &crm_audit_max_value_bytes, 8192, 64, MaxAllocSize / 2, PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("crm.export_threshold", "A result set of more rows than this from managed tables is audited as EXPORT.",
							NULL, &crm_export_threshold, 10000, 1, INT_MAX, PGC_SUSET, 0, NULL, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	server_synchronous_commit = synchronous_commit;
	RegisterCustomRmgr(CRM_RMGR_ID, &crm_rmgr);
	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = auditq_shmem_request;
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = auditq_shmem_startup;
	crm_auditlogin_init();

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 1;
	strlcpy(w.bgw_library_name, "crm", BGW_MAXLEN);
	strlcpy(w.bgw_function_name, "crm_audit_launcher_main", BGW_MAXLEN);
	strlcpy(w.bgw_name, "crm audit worker", BGW_MAXLEN);
	strlcpy(w.bgw_type, "crm audit worker", BGW_MAXLEN);
	RegisterBackgroundWorker(&w);
}

/*
 * A statement that needs a database without other sessions (DROP DATABASE, ALTER DATABASE ... SET
 * TABLESPACE, CREATE DATABASE ... TEMPLATE) will go ahead: its audit writer leaves for up to 10 s
 * (crm_auditq_resume_db once the statement is over). Its events wait, and are dropped only if the
 * database is gone.
 */
void
crm_auditq_release_db(Oid dbid)
{
	int			i;
	Latch	   *l = NULL;

	if (crm_aq == NULL || !OidIsValid(dbid))
		return;
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	i = crm_aq_db_index(dbid, false);
	if (i >= 0)
	{
		crm_aq->dbs[i].paused_until = GetCurrentTimestamp() + 10 * USECS_PER_SEC;
		l = crm_aq->dbs[i].writer_latch;
	}
	LWLockRelease(crm_aq->lock);
	if (l)
		SetLatch(l);
}

/* The statement is over (done or failed): the database's writer may come back at once. */
void
crm_auditq_resume_db(Oid dbid)
{
	int			i;

	if (crm_aq == NULL || !OidIsValid(dbid))
		return;
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	i = crm_aq_db_index(dbid, false);
	if (i >= 0)
		crm_aq->dbs[i].paused_until = 0;
	LWLockRelease(crm_aq->lock);
	if (crm_aq->worker_latch)
		SetLatch(crm_aq->worker_latch);
}

/*
 * SQL function crm._audit_attach(): crm has been installed in this database (the install script
 * calls it). Once the transaction commits, the audit worker forgets that it found no crm here, so
 * that no event of this database is passed over for that.
 */
static Oid	attach_db = InvalidOid;

static void
attach_xact_callback(XactEvent event, void *arg)
{
	int			i;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	if (event == XACT_EVENT_COMMIT && OidIsValid(attach_db) && crm_aq != NULL)
	{
		LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
		i = crm_aq_db_index(attach_db, true);
		if (i >= 0)
		{
			crm_aq->dbs[i].attach_gen++;	/* a writer probing before this commit must not say "no crm" */
			if (crm_aq->dbs[i].state != AQ_DB_CRM)
				crm_aq->dbs[i].state = AQ_DB_UNKNOWN;
		}
		LWLockRelease(crm_aq->lock);
		if (crm_aq->worker_latch)
			SetLatch(crm_aq->worker_latch);
	}
	attach_db = InvalidOid;
}

PG_FUNCTION_INFO_V1(crm_audit_attach);
Datum
crm_audit_attach(PG_FUNCTION_ARGS)
{
	static bool registered = false;

	attach_db = MyDatabaseId;
	if (!registered)
	{
		RegisterXactCallback(attach_xact_callback, NULL);
		registered = true;
	}
	PG_RETURN_VOID();
}

/* SQL function: crm._audit_export(object text, record_id bigint, detail jsonb) returns void — an EXPORT event that outlives its transaction */
PG_FUNCTION_INFO_V1(crm_audit_export_sql);
Datum
crm_audit_export_sql(PG_FUNCTION_ARGS)
{
	bool		found;
	int64		principal = crm_current_principal(&found);

	crm_auditq_session_event("EXPORT", PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)),
							 PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1), found ? principal : 0,
							 PG_ARGISNULL(2) ? NULL : DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(2))));
	PG_RETURN_VOID();
}
