/*
 * auditwriter.c: one audit writer per database with crm, started by the audit worker
 * (auditwal.c). It takes its database's events from shared memory in WAL order and inserts them
 * into crm.audit_log in batches; the same transaction records in crm._audit_intake the WAL position
 * written up to, so events read again after a crash are not written twice. A batch that fails is
 * retried one event at a time: an event that cannot be inserted is quarantined (a MAINTENANCE entry
 * says what it was and why), and a failure of everything (the database read-only, the disk full)
 * gives the events back to be retried a moment later. It also keeps monthly partitions made ahead
 * and seals the chain. It stops after 20 s with nothing to do, or when the audit worker needs its
 * background worker slot for another database.
 */
#include "crm.h"
#include "auditq_int.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void crm_audit_writer_main(Datum arg);

#define BATCH 256
#define IDLE_EXIT_MS 20000

int			crm_audit_interval_ms = 1000;
char	   *crm_audit_writer_fault = NULL;	/* testing: events of this action cannot be inserted */

static int	my_db;
static char my_name[NAMEDATALEN];
static QEvent batch[BATCH];
static XLogRecPtr batch_lsn[BATCH];
static int	batch_slot[BATCH];
static XLogRecPtr written_upto = InvalidXLogRecPtr;
static SPIPlanPtr insert_plan = NULL;
static uint32 attach_gen_seen;	/* crm_aq->dbs[my_db].attach_gen before probing */
static SPIPlanPtr batch_plan = NULL;
static int	last_taken;			/* events taken by the last round */
#define GATHER_MS 10

static void check_identity(void);

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

/* text that is valid in the database encoding (names come from clients) */
static const char *
safe_str(const char *s)
{
	return pg_verifymbstr(s, strlen(s), true) ? s : "?";
}

static Datum
safe_text(const char *s)
{
	if (!pg_verifymbstr(s, strlen(s), true))
		return CStringGetTextDatum("?");
	return CStringGetTextDatum(s);
}

/* --- taking events ------------------------------------------------------------------------------- */

static int
cmp_by_lsn(const void *a, const void *b)
{
	XLogRecPtr	x = crm_aq->slots[*(const int *) a].lsn,
				y = crm_aq->slots[*(const int *) b].lsn;

	return x < y ? -1 : x > y;
}

/* Take up to BATCH of this database's queued events, oldest first. */
static int
take_events(void)
{
	int			n = 0;
	int			cand[AQ_SLOTS];
	int			ncand = 0;

	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AQ_SLOTS; i++)
		if (crm_aq->slots[i].state == AQ_QUEUED && crm_aq->slots[i].db == my_db)
			cand[ncand++] = i;
	qsort(cand, ncand, sizeof(int), cmp_by_lsn);
	for (int k = 0; k < ncand && n < BATCH; k++)
	{
		AqSlot	   *s = &crm_aq->slots[cand[k]];

		s->state = AQ_TAKEN;
		batch[n] = s->ev;
		batch_lsn[n] = s->lsn;
		batch_slot[n] = cand[k];
		n++;
	}
	LWLockRelease(crm_aq->lock);
	return n;
}

/* Give taken events back: written (free their slots) or to be retried (queue them again). */
static void
give_back(int n, bool written)
{
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	for (int k = 0; k < n; k++)
	{
		AqSlot	   *s = &crm_aq->slots[batch_slot[k]];

		if (s->state != AQ_TAKEN || s->db != my_db || s->lsn != batch_lsn[k])
			continue;
		if (written)
		{
			s->state = AQ_FREE;
			crm_aq->used--;
			crm_aq->dbs[my_db].queued--;
		}
		else
			s->state = AQ_QUEUED;
	}
	crm_aq->dbs[my_db].failing = !written;
	LWLockRelease(crm_aq->lock);
	if (written && crm_aq->worker_latch)
		SetLatch(crm_aq->worker_latch);
}

/* --- writing ------------------------------------------------------------------------------------- */

/* crm.audit_writer_fault (superuser, for tests of the quarantine): this action fails to insert */
static void
check_fault(const QEvent *e)
{
	if (crm_audit_writer_fault != NULL && crm_audit_writer_fault[0] != '\0' &&
		strcmp(e->action, crm_audit_writer_fault) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("audit event %s refused by crm.audit_writer_fault", e->action)));
}

static void
prepare_insert(void)
{
	Oid			types[10] = {TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID};

	if (insert_plan != NULL)
		return;
	insert_plan = SPI_prepare("INSERT INTO crm.audit_log (logged_at, principal_id, session_user_name, current_user_name,"
							  " client_addr, application_name, action, object, record_id, detail)"
							  " VALUES ($1, $2, $3, $4, $5::pg_catalog.inet, $6, $7, $8, $9, $10::pg_catalog.jsonb)",
							  10, types);
	if (insert_plan == NULL || SPI_keepplan(insert_plan) != 0)
		elog(ERROR, "crm audit writer: could not prepare the insert");
}

static void
insert_event(QEvent *e)
{
	Datum		v[10];
	char		nulls[10] = {' ', e->principal ? ' ' : 'n', ' ', ' ', e->client_addr[0] ? ' ' : 'n', ' ', ' ',
	e->object[0] ? ' ' : 'n', e->record_id ? ' ' : 'n', e->detail[0] ? ' ' : 'n'};

	check_fault(e);
	v[0] = TimestampTzGetDatum(e->at);
	v[1] = Int64GetDatum(e->principal);
	v[2] = safe_text(e->session_user);
	v[3] = safe_text(e->current_user[0] ? e->current_user : e->session_user);
	v[4] = safe_text(e->client_addr);
	v[5] = safe_text(e->app);
	v[6] = safe_text(e->action);
	v[7] = safe_text(e->object);
	v[8] = Int64GetDatum(e->record_id);
	v[9] = CStringGetTextDatum(json_or_wrapped(e->detail));
	if (SPI_execute_plan(insert_plan, v, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "crm audit writer: insert failed");
}

/* An event that cannot be inserted: what it was, and why, as a MAINTENANCE entry. */
static void
quarantine(QEvent *e, XLogRecPtr lsn, const char *why)
{
	StringInfoData d;
	Oid			t[1] = {TEXTOID};
	Datum		v[1];

	initStringInfo(&d);
	appendStringInfoString(&d, "{\"operation\": \"audit event quarantined\", \"error\": ");
	escape_json(&d, why);
	appendStringInfo(&d, ", \"wal_lsn\": \"%X/%X\", \"action\": ", LSN_FORMAT_ARGS(lsn));
	escape_json(&d, pg_verifymbstr(e->action, strlen(e->action), true) ? e->action : "?");
	appendStringInfoString(&d, ", \"event\": ");
	escape_json(&d, pg_verifymbstr(e->detail, strlen(e->detail), true) ? e->detail : "(not valid in the database encoding)");
	appendStringInfoChar(&d, '}');
	v[0] = CStringGetTextDatum(d.data);
	if (SPI_execute_with_args("INSERT INTO crm.audit_log (action, detail, session_user_name, current_user_name)"
							  " VALUES ('MAINTENANCE', $1::pg_catalog.jsonb, 'crm audit writer', 'crm audit writer')",
							  1, t, v, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "crm audit writer: could not record a quarantined event");
}

static void
record_progress(XLogRecPtr upto)
{
	Oid			t[2] = {INT8OID, INT8OID};
	Datum		v[2] = {Int64GetDatum((int64) GetSystemIdentifier()), Int64GetDatum((int64) upto)};

	if (SPI_execute_with_args("INSERT INTO crm._audit_intake AS i (sysid, lsn) VALUES ($1, $2)"
							  " ON CONFLICT (sysid) DO UPDATE SET lsn = GREATEST(i.lsn, excluded.lsn)", 2, t, v, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "crm audit writer: could not record its position");
}

/* Insert one event in a subtransaction; if it fails, quarantine it instead. */
static void
insert_or_quarantine(int k)
{
	MemoryContext inner = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		insert_event(&batch[k]);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(inner);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(inner);
		CurrentResourceOwner = owner;
		SPI_restore_connection();
		quarantine(&batch[k], batch_lsn[k], ed->message ? ed->message : "unknown error");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(inner);
	CurrentResourceOwner = owner;
}

/*
 * Straight into the month's partition with its indexes, as crm's own entries go (no SQL: a third
 * of the cost per event, measured). False when it cannot (no partition yet): SQL does it then.
 */
static bool
insert_direct(int *idx, int n)
{
	CrmAuditRow *rows = palloc(sizeof(CrmAuditRow) * n);
	const char *ok_detail;

	for (int r = 0; r < n; r++)
	{
		QEvent	   *e = &batch[idx[r]];
		CrmAuditRow *w = &rows[r];

		check_fault(e);
		w->at = e->at;
		w->principal = e->principal;
		w->session_user = safe_str(e->session_user);
		w->current_user = safe_str(e->current_user[0] ? e->current_user : e->session_user);
		w->client_addr = e->client_addr[0] ? safe_str(e->client_addr) : NULL;
		w->app = safe_str(e->app);
		w->action = safe_str(e->action);
		w->object = e->object[0] ? safe_str(e->object) : NULL;
		w->record_id = e->record_id;
		/* (jsonb's input checks it: a bad one fails the batch, written again one by one, wrapped) */
		ok_detail = pg_verifymbstr(e->detail, strlen(e->detail), true) ? e->detail : json_or_wrapped(e->detail);
		w->detail = e->detail[0] ? ok_detail : NULL;
	}
	return crm_audit_insert_rows(rows, n);
}

/* one statement for many events: each column an array */
static void
insert_many(int *idx, int n)
{
	static const Oid elem[10] = {TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID};
	Oid			types[10] = {TIMESTAMPTZARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID};
	Datum	   *v[10];
	bool	   *isnull[10];
	Datum		args[10];
	int			dims[1] = {n};
	int			lbs[1] = {1};

	if (insert_direct(idx, n))
		return;
	if (batch_plan == NULL)
	{
		batch_plan = SPI_prepare("INSERT INTO crm.audit_log (logged_at, principal_id, session_user_name, current_user_name,"
								 " client_addr, application_name, action, object, record_id, detail)"
								 " SELECT u.a, u.b, u.c, u.d, u.e::pg_catalog.inet, u.f, u.g, u.h, u.i, u.j::pg_catalog.jsonb"
								 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
								 " pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7),"
								 " pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10)) AS u(a, b, c, d, e, f, g, h, i, j)",
								 10, types);
		if (batch_plan == NULL || SPI_keepplan(batch_plan) != 0)
			elog(ERROR, "crm audit writer: could not prepare the insert");
	}
	for (int c = 0; c < 10; c++)
	{
		v[c] = palloc(sizeof(Datum) * n);
		isnull[c] = palloc0(sizeof(bool) * n);
	}
	for (int r = 0; r < n; r++)
	{
		QEvent	   *e = &batch[idx[r]];

		check_fault(e);
		v[0][r] = TimestampTzGetDatum(e->at);
		v[1][r] = Int64GetDatum(e->principal);
		isnull[1][r] = e->principal == 0;
		v[2][r] = safe_text(e->session_user);
		v[3][r] = safe_text(e->current_user[0] ? e->current_user : e->session_user);
		v[4][r] = safe_text(e->client_addr);
		isnull[4][r] = e->client_addr[0] == '\0';
		v[5][r] = safe_text(e->app);
		v[6][r] = safe_text(e->action);
		v[7][r] = safe_text(e->object);
		isnull[7][r] = e->object[0] == '\0';
		v[8][r] = Int64GetDatum(e->record_id);
		isnull[8][r] = e->record_id == 0;
		/* (jsonb's input checks it: a bad one fails the batch, written again one by one, wrapped) */
		v[9][r] = CStringGetTextDatum(pg_verifymbstr(e->detail, strlen(e->detail), true) ? e->detail : json_or_wrapped(e->detail));
		isnull[9][r] = e->detail[0] == '\0';
	}
	for (int c = 0; c < 10; c++)
	{
		int16		len;
		bool		byval;
		char		align;

		get_typlenbyvalalign(elem[c], &len, &byval, &align);
		args[c] = PointerGetDatum(construct_md_array(v[c], isnull[c], 1, dims, lbs, elem[c], len, byval, align));
	}
	if (SPI_execute_plan(batch_plan, args, NULL, false, 0) != SPI_OK_INSERT || SPI_processed != (uint64) n)
		elog(ERROR, "crm audit writer: insert failed");
}

/* the events of the batch not yet written, in WAL order; returns the position written up to */
static XLogRecPtr
insert_all(int n, bool one_by_one)
{
	XLogRecPtr	upto = written_upto;
	int			idx[BATCH];
	int			m = 0;

	prepare_insert();
	for (int k = 0; k < n; k++)
	{
		if (batch_lsn[k] <= upto)
			continue;			/* written already: WAL read again after a crash or a restart */
		if (one_by_one)
			insert_or_quarantine(k);
		else
			idx[m++] = k;
		upto = batch_lsn[k];
	}
	if (m > 0)
		insert_many(idx, m);
	record_progress(upto);
	return upto;
}

/*
 * Write the batch in one transaction; one_by_one: each event in a subtransaction, quarantining
 * those that fail. Returns false (and logs why) when the transaction failed.
 */
static bool
write_batch(int n, bool one_by_one)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		XLogRecPtr	upto;

		check_identity();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "crm audit writer: writing events");
		upto = insert_all(n, one_by_one);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		written_upto = upto;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("crm audit writer for \"%s\": could not write %d audit events%s: %s", my_name, n,
						one_by_one ? " one by one" : "", ed->message ? ed->message : "unknown error"),
				 errdetail("They stay queued and are written once it can.")));
		FreeErrorData(ed);
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/* Keep partitions made ahead and seal the chain (false: it failed; retried on the next round). */
static bool
seal(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		check_identity();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "crm audit writer: sealing");
		SPI_execute("SELECT crm._audit_partitions()", false, 0);
		(void) crm_audit_seal_internal();
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG, (errmsg("crm audit writer for \"%s\": could not seal the audit chain: %s", my_name,
							 ed->message ? ed->message : "unknown error")));
		FreeErrorData(ed);
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/*
 * Whether this database has crm's audit log (PROBE_ABSENT: its events are not crm's), whether the
 * log is complete (PROBE_NOT_READY during a restore: the tables exist before their rows and
 * triggers, which come last, and writing then would interleave with the restored entries; the
 * events wait), and where its writer got to.
 */
typedef enum
{
	PROBE_ABSENT,
	PROBE_NOT_READY,
	PROBE_READY
} ProbeResult;

/*
 * Whether schema nsp is the crm extension's. The writer runs as the bootstrap superuser: a "crm"
 * schema of anyone's making (a login with CREATEDB can make one in its own database, with an
 * audit_log, a trigger crm_append_only and a crm._audit_partitions() of its choosing) must never
 * have its functions and triggers run by it. Only a superuser can create the extension.
 */
static bool
crm_installed_here(Oid nsp)
{
	Oid			t[1] = {OIDOID};
	Datum		v[1] = {ObjectIdGetDatum(nsp)};

	return SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'crm'"
								 " AND e.extnamespace OPERATOR(pg_catalog.=) $1", 1, t, v, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1;
}

/*
 * The writer runs as the bootstrap superuser, and as nobody else: settings of its database or of
 * that role in it (ALTER DATABASE d SET role = x, ALTER ROLE ... IN DATABASE d SET
 * session_authorization = x) were applied when it connected; they are undone here, and checked at
 * every transaction.
 */
static void
check_identity(void)
{
	if (GetSessionUserId() != BOOTSTRAP_SUPERUSERID || GetUserId() != BOOTSTRAP_SUPERUSERID ||
		GetOuterUserId() != BOOTSTRAP_SUPERUSERID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("crm audit writer for \"%s\" is not running as the bootstrap superuser", my_name),
				 errhint("Remove role or session_authorization settings of this database (ALTER DATABASE ... RESET, ALTER ROLE ... IN DATABASE ... RESET).")));
}

static void
become_bootstrap_superuser(void)
{
	char	   *n;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	n = get_database_name(MyDatabaseId);
	strlcpy(my_name, n ? n : "?", NAMEDATALEN);
	SetConfigOption("session_authorization", GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false), PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("role", "none", PGC_SUSET, PGC_S_OVERRIDE);
	check_identity();
	CommitTransactionCommand();
}

static ProbeResult
probe(void)
{
	ProbeResult r = PROBE_ABSENT;
	Oid			nsp;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	check_identity();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	nsp = get_namespace_oid("crm", true);
	if (OidIsValid(nsp) && OidIsValid(get_relname_relid("audit_log", nsp)) && crm_installed_here(nsp))
		r = PROBE_NOT_READY;
	if (r == PROBE_NOT_READY && OidIsValid(get_relname_relid("_audit_intake", nsp)) &&
		SPI_execute("SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid OPERATOR(pg_catalog.=) 'crm.audit_log'::pg_catalog.regclass"
					" AND t.tgname OPERATOR(pg_catalog.=) 'crm_append_only'"
					/* and the restored log is all there (restore.c, crm_audit_log_loaded), and its id
					 * sequence set (a parallel restore may set it last): events wait in WAL till then */
					" AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid"
					" WHERE i.indrelid OPERATOR(pg_catalog.=) 'crm.audit_log'::pg_catalog.regclass AND NOT i.indisvalid"
					" AND c.relname OPERATOR(pg_catalog.=) ANY ('{audit_log_xid,audit_log_record}'::pg_catalog.name[]))"
					" AND (pg_catalog.pg_sequence_last_value(pg_catalog.to_regclass('crm.audit_log_id_seq')) IS NOT NULL"
					" OR NOT EXISTS (SELECT 1 FROM crm.audit_log))", true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		Oid			t[1] = {INT8OID};
		Datum		v[1] = {Int64GetDatum((int64) GetSystemIdentifier())};
		bool		isnull;

		r = PROBE_READY;
		if (SPI_execute_with_args("SELECT i.lsn FROM crm._audit_intake i WHERE i.sysid OPERATOR(pg_catalog.=) $1",
								  1, t, v, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				written_upto = (XLogRecPtr) DatumGetInt64(d);
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return r;
}

/* Tell the audit worker what this database is; false when the entry is no longer ours. */
static bool
announce(bool has_crm)
{
	bool		mine;

	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	mine = crm_aq->dbs[my_db].dbid == MyDatabaseId && crm_aq->dbs[my_db].state != AQ_DB_UNUSED;
	/*
	 * One writer per database: a restarted audit worker does not know the writers of the one before
	 * it, and a second writer, with the position it read before the first one's last commit, would
	 * write that batch's events again.
	 */
	if (mine && crm_aq->dbs[my_db].writer_pid != 0 && crm_aq->dbs[my_db].writer_pid != MyProcPid &&
		BackendPidGetProc(crm_aq->dbs[my_db].writer_pid) != NULL)
		mine = false;
	/* crm was installed here since this writer looked: it looks again (the audit worker starts it) */
	if (mine && !has_crm && crm_aq->dbs[my_db].attach_gen != attach_gen_seen)
		mine = false;
	if (mine)
	{
		crm_aq->dbs[my_db].state = has_crm ? AQ_DB_CRM : AQ_DB_NOCRM;
		crm_aq->dbs[my_db].recheck_at = GetCurrentTimestamp() + 30 * USECS_PER_SEC;
		crm_aq->dbs[my_db].writer_latch = has_crm ? MyLatch : NULL;
		crm_aq->dbs[my_db].writer_pid = has_crm ? MyProcPid : 0;
	}
	LWLockRelease(crm_aq->lock);
	if (crm_aq->worker_latch)
		SetLatch(crm_aq->worker_latch);
	return mine;
}

static void
writer_exit(int code, Datum arg)
{
	LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
	/* only the database's writer took events (a second one that found it alive took none) */
	if (crm_aq->dbs[my_db].dbid == MyDatabaseId && crm_aq->dbs[my_db].writer_pid == MyProcPid)
	{
		crm_aq->dbs[my_db].writer_latch = NULL;
		crm_aq->dbs[my_db].writer_pid = 0;
		/* events taken and not written go back to the queue */
		for (int i = 0; i < AQ_SLOTS; i++)
			if (crm_aq->slots[i].state == AQ_TAKEN && crm_aq->slots[i].db == my_db)
				crm_aq->slots[i].state = AQ_QUEUED;
	}
	LWLockRelease(crm_aq->lock);
}

/*
 * One round: write what is queued, seal when due; returns whether there was anything to do. What
 * this writer wrote itself is sealed within crm.audit_interval (unsealed), whether or not anything
 * else marked the database for sealing (dirty).
 */
static bool
writer_round(TimestampTz *last_seal)
{
	static bool unsealed = false;
	int			n = take_events();
	bool		dirty;
	TimestampTz t0;

	last_taken = n;

	if (n > 0)
	{
		bool		ok = write_batch(n, false) || write_batch(n, true);

		give_back(n, ok);
		if (!ok)
			proc_exit(1);		/* the audit worker starts a new writer in a second */
		unsealed = true;
	}
	LWLockAcquire(crm_aq->lock, LW_SHARED);
	dirty = crm_aq->dbs[my_db].dirty;
	LWLockRelease(crm_aq->lock);
	if ((dirty || unsealed) && TimestampDifferenceExceeds(*last_seal, GetCurrentTimestamp(), crm_audit_interval_ms))
	{
		LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
		crm_aq->dbs[my_db].dirty = false;
		LWLockRelease(crm_aq->lock);
		t0 = GetCurrentTimestamp();
		if (seal())
			unsealed = false;
		else
			unsealed = true;	/* (and the database's own entries: tried again next round) */
		*last_seal = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(t0, *last_seal, 500))
			ereport(DEBUG1, (errmsg("crm audit writer for \"%s\": sealing took %ld ms", my_name,
								 (long) ((*last_seal - t0) / 1000))));
		return true;
	}
	return n > 0;
}

void
crm_audit_writer_main(Datum arg)
{
	TimestampTz last_seal = 0;
	TimestampTz last_work = GetCurrentTimestamp();

	Oid			dbid;

	my_db = DatumGetInt32(arg);
	dbid = (Oid) strtoul(MyBgworkerEntry->bgw_extra, NULL, 10);
	if (my_db < 0 || my_db >= AQ_MAXDB || !OidIsValid(dbid))
		proc_exit(1);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* by OID: a database renamed since its events were queued is still theirs */
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, BGWORKER_BYPASS_ALLOWCONN);
	pgstat_report_appname("crm audit writer");
	become_bootstrap_superuser();
	/* its own fixed environment: no database or role setting delays or redirects it */
	SetConfigOption("search_path", CRM_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * In a deadlock (DROP EXTENSION crm against a batch, seen in tests), the writer is the one to
	 * give way: it checks first, fails its batch and writes it again; the DBA's statement goes on.
	 */
	SetConfigOption("deadlock_timeout", "100ms", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	/* a database owner's ALTER DATABASE ... SET default_transaction_read_only must not stop it */
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	before_shmem_exit(writer_exit, 0);
	LWLockAcquire(crm_aq->lock, LW_SHARED);
	attach_gen_seen = crm_aq->dbs[my_db].attach_gen;
	LWLockRelease(crm_aq->lock);
	switch (probe())
	{
		case PROBE_ABSENT:
			(void) announce(false);
			proc_exit(0);
			break;
		case PROBE_NOT_READY:
			/*
			 * Its events wait; the audit worker tries again in a second. It has crm: events for
			 * every database are queued for it too (left "unknown", it held back all of those, and
			 * so every event after the first of them, until the restore was over).
			 */
			LWLockAcquire(crm_aq->lock, LW_EXCLUSIVE);
			if (crm_aq->dbs[my_db].dbid == MyDatabaseId && crm_aq->dbs[my_db].state == AQ_DB_UNKNOWN)
				crm_aq->dbs[my_db].state = AQ_DB_CRM;
			LWLockRelease(crm_aq->lock);
			proc_exit(1);
			break;
		case PROBE_READY:
			if (!announce(true))
				proc_exit(0);
			break;
	}
	LWLockAcquire(crm_aq->lock, LW_SHARED);
	if (crm_aq->dbs[my_db].state != AQ_DB_CRM)
	{
		LWLockRelease(crm_aq->lock);
		proc_exit(0);
	}
	LWLockRelease(crm_aq->lock);
	while (!ShutdownRequestPending && crm_aq->dbs[my_db].paused_until <= GetCurrentTimestamp())
	{
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (writer_round(&last_seal))
		{
			last_work = GetCurrentTimestamp();
			/*
			 * Less than a full batch: let events gather for a moment (a transaction per event cost
			 * the writer three times the CPU per event at a steady trickle, measured).
			 */
			if (last_taken < BATCH / 2)
				(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, GATHER_MS, PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), IDLE_EXIT_MS))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, crm_audit_interval_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	proc_exit(0);
}
