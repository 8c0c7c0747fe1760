/*
 * auditq.c: audit events that must outlive their transaction, and the audit worker.
 *
 * LOGIN and LOGIN_FAILED (client authentication hook), DENIED (errors with SQLSTATE 42501 in a
 * database using crm), READ_SENSITIVE and EXPORT happen whether or not their transaction commits —
 * a failed login has no transaction at all. They go into a queue in shared memory. The audit worker
 * (registered when crm is preloaded) wakes every crm.audit_interval, and for each database with
 * queued events or unsealed entries starts a short-lived worker connected to it that writes the
 * events into crm.audit_log, keeps monthly partitions made ahead, and seals the chain.
 */
#include "crm.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define QSIZE 512
#define MAXDB 64
#define DETAIL_LEN CRM_AUDIT_DETAIL_LEN

typedef struct QEvent
{
	uint64		seq;
	char		db[NAMEDATALEN];
	TimestampTz at;
	int64		principal;
	char		session_user[NAMEDATALEN];
	char		current_user[NAMEDATALEN];
	char		client_addr[64];
	char		app[64];
	char		action[24];
	char		object[NAMEDATALEN];
	int64		record_id;
	char		detail[DETAIL_LEN];
} QEvent;

typedef struct AuditQ
{
	slock_t		lock;
	uint64		next_seq;
	int			head;			/* oldest */
	int			count;
	uint64		lost;
	int			ndirty;
	char		dirty[MAXDB][NAMEDATALEN];
	Latch	   *worker_latch;
	QEvent		ev[QSIZE];
} AuditQ;

static AuditQ *q = NULL;
static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;
int			crm_audit_interval_ms = 1000;
int			crm_audit_max_value_bytes = 8192;
int			crm_audit_max_ids = 100;
int			crm_export_threshold = 10000;

static void
auditq_shmem_request(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuditQ)));
}

static void
auditq_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup)
		prev_shmem_startup();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	q = ShmemInitStruct("crm audit queue", sizeof(AuditQ), &found);
	if (!found)
	{
		memset(q, 0, sizeof(AuditQ));
		SpinLockInit(&q->lock);
		q->next_seq = 1;
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
copy_str(char *dst, const char *src, size_t n)
{
	strlcpy(dst, src ? src : "", n);
}

/*
 * Queue one event (never throws: also called from error reporting). db NULL: this database.
 * Returns false when the queue was full (the event is counted as lost and reported later).
 */
bool
crm_auditq_push(const char *db, const char *action, const char *object, int64 record_id, int64 principal,
				const char *session_user, const char *current_user, const char *client_addr, const char *app,
				const char *detail)
{
	QEvent	   *e;
	bool		ok = true;

	if (q == NULL)
		return false;
	SpinLockAcquire(&q->lock);
	if (q->count >= QSIZE)
	{
		q->lost++;
		ok = false;
	}
	else
	{
		e = &q->ev[(q->head + q->count) % QSIZE];
		q->count++;
		e->seq = q->next_seq++;
		copy_str(e->db, db, NAMEDATALEN);
		e->at = GetCurrentTimestamp();
		e->principal = principal;
		copy_str(e->session_user, session_user, NAMEDATALEN);
		copy_str(e->current_user, current_user, NAMEDATALEN);
		copy_str(e->client_addr, client_addr, sizeof(e->client_addr));
		copy_str(e->app, app, sizeof(e->app));
		copy_str(e->action, action, sizeof(e->action));
		copy_str(e->object, object, NAMEDATALEN);
		e->record_id = record_id;
		/* never a cut-off JSON text (the writer must be able to store every event) */
		if (detail != NULL && strlen(detail) >= DETAIL_LEN)
			snprintf(e->detail, DETAIL_LEN, "{\"truncated\": true, \"bytes\": %zu}", strlen(detail));
		else
			copy_str(e->detail, detail, DETAIL_LEN);
	}
	SpinLockRelease(&q->lock);
	if (q->worker_latch)
		SetLatch(q->worker_latch);
	return ok;
}

/*
 * An event's detail as the writer stores it: the JSON text if it is valid, else (a producer's bug)
 * the text as a JSON string, so that one bad event never costs the others of its batch.
 */
/* whether JSON text holds the escape \u0000 (a backslash that is not itself escaped, then u0000) */
static bool
has_nul_escape(const char *s)
{
	for (const char *p = s; (p = strstr(p, "\\u0000")) != NULL; p++)
	{
		int			n = 0;

		for (const char *b = p; b > s && b[-1] == '\\'; b--)
			n++;
		if (n % 2 == 0)
			return true;
	}
	return false;
}

static char *
json_or_wrapped(char *detail)
{
	JsonLexContext *lex;
	StringInfoData d;

	if (detail[0] == '\0')
		return detail;
	if (!pg_verifymbstr(detail, strlen(detail), true))
		return psprintf("{\"invalid_detail\": \"not valid in the database encoding\", \"bytes\": %zu}", strlen(detail));
	lex = makeJsonLexContextCstringLen(detail, strlen(detail), GetDatabaseEncoding(), false);
	/* valid JSON that jsonb also takes (it refuses \u0000) */
	if (pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS && !has_nul_escape(detail))
		return detail;
	initStringInfo(&d);
	appendStringInfoString(&d, "{\"invalid_detail\": ");
	escape_json(&d, detail);
	appendStringInfoChar(&d, '}');
	return d.data;
}

/* This database has entries to seal. */
void
crm_auditq_mark_dirty(void)
{
	static LocalTransactionId marked = InvalidLocalTransactionId;
	static char *db = NULL;
	bool		have = false;

	if (q == NULL || !OidIsValid(MyDatabaseId) || marked == MyProc->lxid)
		return;
	marked = MyProc->lxid;
	if (db == NULL)
	{
		char	   *n = get_database_name(MyDatabaseId);

		if (n == NULL)
			return;
		db = MemoryContextStrdup(TopMemoryContext, n);
	}
	SpinLockAcquire(&q->lock);
	for (int i = 0; i < q->ndirty; i++)
		if (strcmp(q->dirty[i], db) == 0)
			have = true;
	if (!have && q->ndirty < MAXDB)
		strlcpy(q->dirty[q->ndirty++], db, NAMEDATALEN);
	SpinLockRelease(&q->lock);
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
	if (MyProcPort && MyProcPort->remote_host && MyProcPort->raddr.addr.ss_family != AF_UNIX)
		strlcpy(addr, MyProcPort->remote_host, sizeof(addr));
	if (IsTransactionState() && OidIsValid(GetUserId()) && user != GetUserId())
	{
		char	   *n = GetUserNameFromId(GetUserId(), true);

		namestrcpy(&user_name, n ? n : "");
		user = GetUserId();
	}
	(void) crm_auditq_push(MyProcPort ? MyProcPort->database_name : NULL, action, object, record_id, principal,
						   MyProcPort && MyProcPort->user_name ? MyProcPort->user_name : "",
						   NameStr(user_name), addr, application_name, detail);
}

/* --- the worker ---------------------------------------------------------------------------------- */

PGDLLEXPORT void crm_audit_launcher_main(Datum arg);
PGDLLEXPORT void crm_audit_db_main(Datum arg);

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

static void
start_db_worker(const char *db)
{
	(void) crm_run_db_worker("crm_audit_db_main", "crm audit writer", db);
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
crm_audit_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	q->worker_latch = MyLatch;
	while (!ShutdownRequestPending)
	{
		char		dbs[MAXDB][NAMEDATALEN];
		int			n = 0;
		uint64		upto;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, crm_audit_interval_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* the databases with something to do: queued events, or entries to seal */
		SpinLockAcquire(&q->lock);
		upto = q->next_seq;
		for (int i = 0; i < q->ndirty && n < MAXDB; i++)
			strlcpy(dbs[n++], q->dirty[i], NAMEDATALEN);
		q->ndirty = 0;
		for (int i = 0; i < q->count && n < MAXDB; i++)
		{
			QEvent	   *e = &q->ev[(q->head + i) % QSIZE];
			bool		have = false;

			for (int j = 0; j < n; j++)
				if (strcmp(dbs[j], e->db) == 0)
					have = true;
			if (!have)
				strlcpy(dbs[n++], e->db, NAMEDATALEN);
		}
		SpinLockRelease(&q->lock);
		for (int i = 0; i < n && !ShutdownRequestPending; i++)
			start_db_worker(dbs[i]);
		/* events for databases that could not take them (gone, or without crm) are dropped */
		SpinLockAcquire(&q->lock);
		while (q->count > 0)
		{
			QEvent	   *e = &q->ev[q->head];
			bool		mine = false;

			for (int j = 0; j < n; j++)
				if (strcmp(dbs[j], e->db) == 0)
					mine = true;
			if (!mine || e->seq >= upto)
				break;
			q->head = (q->head + 1) % QSIZE;
			q->count--;
		}
		SpinLockRelease(&q->lock);
	}
	q->worker_latch = NULL;
	proc_exit(0);
}

/* Write this database's queued events, keep partitions ahead, seal the chain. */
void
crm_audit_db_main(Datum arg)
{
	char		db[NAMEDATALEN];
	QEvent	   *mine;
	int			nmine = 0;
	uint64		lost = 0;

	strlcpy(db, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(db, NULL, BGWORKER_BYPASS_ALLOWCONN);

	mine = palloc(sizeof(QEvent) * QSIZE);
	SpinLockAcquire(&q->lock);
	for (int i = 0; i < q->count; i++)
	{
		QEvent	   *e = &q->ev[(q->head + i) % QSIZE];

		if (strcmp(e->db, db) == 0)
			mine[nmine++] = *e;
	}
	lost = q->lost;
	q->lost = 0;
	SpinLockRelease(&q->lock);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "crm audit writer");
	/*
	 * Only into a complete log: during a restore the tables exist before their rows and triggers
	 * (which come last), and writing then would interleave with the restored entries.
	 */
	if (OidIsValid(get_namespace_oid("crm", true)) &&
		OidIsValid(get_relname_relid("audit_log", get_namespace_oid("crm", true))) &&
		SPI_execute("SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid OPERATOR(pg_catalog.=) 'crm.audit_log'::pg_catalog.regclass"
					" AND t.tgname OPERATOR(pg_catalog.=) 'crm_append_only'", true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		Oid			types[10] = {TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID};
		SPIPlanPtr	plan = SPI_prepare("INSERT INTO crm.audit_log (logged_at, principal_id, session_user_name, current_user_name,"
									   " client_addr, application_name, action, object, record_id, detail)"
									   " VALUES ($1, $2, $3, $4, $5::inet, $6, $7, $8, $9, $10::jsonb)", 10, types);

		for (int i = 0; i < nmine; i++)
		{
			QEvent	   *e = &mine[i];
			Datum		v[10];
			char		nulls[10] = {' ', e->principal ? ' ' : 'n', ' ', ' ', e->client_addr[0] ? ' ' : 'n', ' ', ' ',
			e->object[0] ? ' ' : 'n', e->record_id ? ' ' : 'n', e->detail[0] ? ' ' : 'n'};

			v[0] = TimestampTzGetDatum(e->at);
			v[1] = Int64GetDatum(e->principal);
			v[2] = CStringGetTextDatum(e->session_user);
			v[3] = CStringGetTextDatum(e->current_user[0] ? e->current_user : e->session_user);
			v[4] = CStringGetTextDatum(e->client_addr);
			v[5] = CStringGetTextDatum(e->app);
			v[6] = CStringGetTextDatum(e->action);
			v[7] = CStringGetTextDatum(e->object);
			v[8] = Int64GetDatum(e->record_id);
			v[9] = CStringGetTextDatum(json_or_wrapped(e->detail));
			if (SPI_execute_plan(plan, v, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "crm audit writer: insert failed");
		}
		if (lost > 0)
		{
			char	   *d = psprintf("{\"operation\": \"audit queue overflow\", \"lost_events\": %llu}", (unsigned long long) lost);
			Oid			t1[1] = {TEXTOID};
			Datum		v1[1] = {CStringGetTextDatum(d)};

			SPI_execute_with_args("INSERT INTO crm.audit_log (action, detail) VALUES ('MAINTENANCE', $1::pg_catalog.jsonb)", 1, t1, v1, NULL, false, 0);
		}
		SPI_execute("SELECT crm._audit_partitions()", false, 0);
		(void) crm_audit_seal_internal();
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	/* written (or not wanted here): take them off the queue */
	SpinLockAcquire(&q->lock);
	{
		int			kept = 0;
		QEvent	   *tmp = palloc(sizeof(QEvent) * QSIZE);

		for (int i = 0; i < q->count; i++)
		{
			QEvent	   *e = &q->ev[(q->head + i) % QSIZE];
			bool		done = false;

			for (int j = 0; j < nmine; j++)
				if (mine[j].seq == e->seq)
					done = true;
			if (!done)
				tmp[kept++] = *e;
		}
		for (int i = 0; i < kept; i++)
			q->ev[i] = tmp[i];
		q->head = 0;
		q->count = kept;
	}
	SpinLockRelease(&q->lock);
	proc_exit(0);
}

void
crm_auditq_init(void)
{
	BackgroundWorker w;

	DefineCustomIntVariable("crm.audit_interval", "How often the audit worker writes queued events and seals the chain (ms).",
							NULL, &crm_audit_interval_ms, 1000, 100, 60000, PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("crm.audit_max_ids", "READ_SENSITIVE/EXPORT events list at most this many record ids; beyond it, a digest.",
							NULL, &crm_audit_max_ids, 100, 0, 1000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("crm.audit_max_value_bytes", "A value longer than this is audited as its SHA-256 hash and length, not the value.",
							NULL, &crm_audit_max_value_bytes, 8192, 64, MaxAllocSize / 2, PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("crm.export_threshold", "A result set of more rows than this from managed tables is audited as EXPORT.",
							NULL, &crm_export_threshold, 10000, 1, INT_MAX, PGC_SUSET, 0, NULL, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = auditq_shmem_request;
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = auditq_shmem_startup;
	crm_auditlogin_init();

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 5;
	strlcpy(w.bgw_library_name, "crm", BGW_MAXLEN);
	strlcpy(w.bgw_function_name, "crm_audit_launcher_main", BGW_MAXLEN);
	strlcpy(w.bgw_name, "crm audit worker", BGW_MAXLEN);
	strlcpy(w.bgw_type, "crm audit worker", BGW_MAXLEN);
	RegisterBackgroundWorker(&w);
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
