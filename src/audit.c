/*
 * audit.c: the audit log. Owns the row audit triggers on managed tables, transactional events,
 * the append-only guard, the keyed hashes of protected values, and the hash chain: sealing,
 * verification and digests.
 *
 * Writing. crm._audit_row() (AFTER ROW) turns each change into an entry — INSERT with the values,
 * UPDATE with only the fields that changed, DELETE — and keeps it in a per-transaction buffer;
 * crm._audit_flush() (AFTER STATEMENT) writes the statement's entries with one INSERT. Values of
 * personal, sensitive and encrypted fields are written as keyed hashes (HMAC-SHA256 under a key
 * of the record's customer derived from the key file: auditkeys.c). Entries commit or roll back
 * with the change; writers take no shared lock.
 *
 * Chaining. An entry belongs to the transaction that wrote it (xid) in an "era" (this cluster and
 * database). crm.audit_seal() takes the entries of the current era whose xid lies below the xmin of
 * its snapshot — their transactions have ended, so that set can no longer change — orders them by
 * id, and appends a block: ids, running chain hashes h_i = SHA-256(h_{i-1} || SHA-256(entry_i)),
 * and a block hash linking it to the previous block. Verification recomputes every hash from the
 * rows and names the first entry (or block) that does not match.
 */
#include "crm.h"

#include "access/brin.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/tableam.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "libpq/libpq-be.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "storage/proc.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_largeobject.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_trigger.h"
#include "parser/parse_func.h"
#include "utils/syscache.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/datetime.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"

bool		crm_audit_internal_ddl = false;

/* --- small helpers ------------------------------------------------------------------------------- */

static void
sha256(const void *data, size_t len, uint8 *out)
{
	crm_sha256(data, len, out);
}

static void
hex(const uint8 *b, size_t n, StringInfo out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++)
	{
		appendStringInfoChar(out, d[b[i] >> 4]);
		appendStringInfoChar(out, d[b[i] & 15]);
	}
}

static void
put64(StringInfo s, uint64 v)
{
	uint8		b[8];

	for (int i = 7; i >= 0; i--)
	{
		b[i] = (uint8) (v & 0xff);
		v >>= 8;
	}
	appendBinaryStringInfo(s, (char *) b, 8);
}

/* SQL function: crm._audit_era() returns bigint (this cluster and database) */
PG_FUNCTION_INFO_V1(crm_audit_era);
Datum
crm_audit_era(PG_FUNCTION_ARGS)
{
	uint64		k[2] = {GetSystemIdentifier(), (uint64) MyDatabaseId};

	PG_RETURN_INT64((int64) (hash_bytes_extended((const unsigned char *) k, sizeof(k), 0x63726d) & INT64CONST(0x7fffffffffffffff)));
}

/* --- keyed hashes (the keys: auditkeys.c) ----------------------------------------------------------- */

static void
keyed_hash(const CrmHmacKey *k, const char *object, const char *field, const char *value, size_t len, StringInfo out)
{
	CrmSha256	c;
	uint8		h[32];

	crm_hmac_start(k, &c);
	crm_sha256_update(&c, object, strlen(object) + 1);
	crm_sha256_update(&c, field, strlen(field) + 1);
	crm_sha256_update(&c, value, len);
	crm_hmac_finish(k, &c, h);
	hex(h, 16, out);
}

/* --- per-table metadata ------------------------------------------------------------------------------ */

#define AF_SKIP		0			/* not recorded (updated_at/by, blind indexes, id) */
#define AF_PLAIN	1
#define AF_HASHED	2			/* personal / sensitive: keyed hash */
#define AF_ENCRYPTED 3			/* encrypted: keyed hash of the plaintext */

typedef struct AuditRel
{
	Oid			relid;
	char	   *object;
	int			natts;
	int		   *kind;			/* by attnum - 1 */
	FmgrInfo   *out;			/* output functions, by attnum - 1 */
	bool		has_encrypted;
} AuditRel;

static HTAB *audit_rels = NULL;
static MemoryContext audit_cxt = NULL;

void
crm_audit_rel_reset(void)
{
	crm_audit_keys_reset();
	audit_rels = NULL;
	/* callers may hold entries still (a reset can come in the middle of a trigger): retire, not free */
	crm_cache_retire(&audit_cxt);
}

static AuditRel *
audit_rel(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	AuditRel   *e;
	bool		found;
	AuditRel	tmp;
	CrmUserSwitch sw;
	TupleDesc	desc = RelationGetDescr(rel);
	uint64		generation;
	MemoryContext build_cxt;

	if (audit_rels == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(AuditRel);
		ctl.hcxt = crm_cache_context(&audit_cxt, "crm audit metadata");
		audit_rels = hash_create("crm audit metadata", 32, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(audit_rels, &relid, HASH_FIND, &found);
	if (found && e->natts == desc->natts)
		return e;
	crm_watch_catalogs();
	generation = crm_cache_generation;
	crm_cache_watch_rel(relid);
	/* (if a reset retires build_cxt while we query, the entry is built again below) */
	/* (crm_watch_catalogs may have taken in a reset that retired audit_cxt: never build in NULL) */
	build_cxt = crm_cache_context(&audit_cxt, "crm audit metadata");
	memset(&tmp, 0, sizeof(tmp));
	tmp.relid = relid;
	tmp.natts = desc->natts;
	tmp.object = MemoryContextStrdup(build_cxt, RelationGetRelationName(rel));
	tmp.kind = MemoryContextAllocZero(build_cxt, sizeof(int) * Max(desc->natts, 1));
	tmp.out = MemoryContextAllocZero(build_cxt, sizeof(FmgrInfo) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);
		const char *n = NameStr(a->attname);

		if (!a->attisdropped)
		{
			Oid			out;
			bool		varlena;

			getTypeOutputInfo(a->atttypid, &out, &varlena);
			fmgr_info_cxt(out, &tmp.out[i], build_cxt);
		}

		if (a->attisdropped || strcmp(n, "id") == 0 || strcmp(n, "updated_at") == 0 ||
			strcmp(n, "updated_by") == 0 || strncmp(n, "crm_bidx_", 9) == 0 ||
			(strcmp(n, "wrapped") == 0 && a->atttypid == BYTEAOID))	/* crm.data_key: no key material */
			tmp.kind[i] = AF_SKIP;
		else
			tmp.kind[i] = AF_PLAIN;
	}
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[1] = {TEXTOID};
		Datum		vals[1] = {CStringGetTextDatum(RelationGetRelationName(rel))};

		SPI_connect();
		/* the latest snapshot: what the relation's descriptor says too (cache.c) */
		if (crm_spi_latest(crm_kept_plan("SELECT f.name, f.encrypted, f.sensitivity OPERATOR(pg_catalog.=) ANY ('{personal,sensitive}'::pg_catalog.text[])"
										 " FROM crm.field f WHERE f.object OPERATOR(pg_catalog.=) $1",
										 1, types), vals) != SPI_OK_SELECT)
			elog(ERROR, "crm audit metadata query failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			bool		isnull;
			int			att = crm_attnum(desc, SPI_getvalue(t, SPI_tuptable->tupdesc, 1));

			if (att <= 0)
				continue;
			if (DatumGetBool(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull)))
			{
				tmp.kind[att - 1] = AF_ENCRYPTED;
				tmp.has_encrypted = true;
			}
			else if (DatumGetBool(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull)))
				tmp.kind[att - 1] = AF_HASHED;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	if (generation != crm_cache_generation || audit_rels == NULL)	/* reset while we queried: again */
		return audit_rel(rel);
	e = hash_search(audit_rels, &relid, HASH_ENTER, &found);
	*e = tmp;
	return e;
}

/* --- the buffer of entries written at the end of each statement ------------------------------------ */

typedef struct PendingEntry
{
	TimestampTz at;
	int64		principal;		/* 0: none */
	char	   *current_user_name;
	char	   *action;
	char	   *object;
	int64		record_id;
	char	   *detail;			/* JSON text, or */
	Jsonb	   *jdetail;		/* the same already built (row entries) */
	int			nest_level;
	/* the audit writer's events: whose session they were (NULL: this session's) */
	const char *session_user_name;
	const char *client_addr;
	const char *app;
} PendingEntry;

static List *pending = NIL;		/* of PendingEntry *, in TopTransactionContext */
static bool xact_cb_registered = false;

static void
audit_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PREPARE)
		pending = NIL;			/* its memory goes with TopTransactionContext */
	else if ((event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE) && pending != NIL)
		elog(ERROR, "crm: audit entries were left unwritten at commit");
}

static void
audit_subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && pending != NIL)
	{
		int			level = GetCurrentTransactionNestLevel();
		List	   *keep = NIL;
		ListCell   *lc;
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		foreach(lc, pending)
		{
			PendingEntry *p = lfirst(lc);

			if (p->nest_level < level)
				keep = lappend(keep, p);
		}
		pending = keep;
		MemoryContextSwitchTo(old);
	}
}

static void
register_callbacks(void)
{
	if (!xact_cb_registered)
	{
		RegisterXactCallback(audit_xact_callback, NULL);
		RegisterSubXactCallback(audit_subxact_callback, NULL);
		xact_cb_registered = true;
	}
}

static void
add_pending_jsonb(const char *action, const char *object, int64 record_id, const char *detail, Jsonb *jdetail)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingEntry *p = palloc(sizeof(PendingEntry));
	bool		found;
	int64		principal = crm_current_principal(&found);

	register_callbacks();
	p->at = GetCurrentTimestamp();
	p->principal = found ? principal : 0;
	{
		static Oid	last_user = InvalidOid;
		static NameData last_name;

		/* one catalog lookup per user, not per row */
		if (last_user != GetUserId())
		{
			namestrcpy(&last_name, GetUserNameFromId(GetUserId(), false));
			last_user = GetUserId();
		}
		p->current_user_name = pstrdup(NameStr(last_name));
	}
	p->session_user_name = p->client_addr = p->app = NULL;
	p->action = pstrdup(action);
	p->object = object ? pstrdup(object) : NULL;
	p->record_id = record_id;
	p->detail = detail ? pstrdup(detail) : NULL;
	if (jdetail)
	{
		p->jdetail = palloc(VARSIZE(jdetail));
		memcpy(p->jdetail, jdetail, VARSIZE(jdetail));
	}
	else
		p->jdetail = NULL;
	p->nest_level = GetCurrentTransactionNestLevel();
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
}

static void
add_pending(const char *action, const char *object, int64 record_id, const char *detail)
{
	add_pending_jsonb(action, object, record_id, detail, NULL);
}

static SPIPlanPtr flush_plan = NULL;
static SPIPlanPtr flush_one_plan = NULL;	/* the common case: one entry */
static Oid	flush_target = InvalidOid;	/* the relation both plans insert into */

/*
 * Where a flush inserts: straight into the month's partition when every entry falls in it (it
 * saves routing each statement's entries through the partitioned table), else the log itself.
 */
/*
 * What a flush needs, kept from one statement to the next: the month's partition, its column
 * numbers and the id sequence. Any relcache invalidation (a partition made, detached, altered)
 * forgets it.
 */
static struct
{
	bool		valid;
	int			year, mon;
	Oid			part;
	char		name[NAMEDATALEN];
	Oid			seq;
	int			att[13];
} flush_cache;
static bool flush_cache_cb = false;

static bool ready_known;

static void
flush_cache_forget(Datum arg, Oid relid)
{
	flush_cache.valid = false;
	ready_known = false;
}

static void
watch_log_relcache(void)
{
	if (!flush_cache_cb)
	{
		CacheRegisterRelcacheCallback(flush_cache_forget, (Datum) 0);
		flush_cache_cb = true;
	}
}

static Oid
flush_relation(TimestampTz *at, int n, char **name)
{
	struct pg_tm tm, tm2;
	fsec_t		fsec;
	Oid			nsp;
	Oid			relid;

	watch_log_relcache();
	if (timestamp2tm(at[0], NULL, &tm, &fsec, NULL, NULL) == 0)
	{
		bool		same = true;

		for (int i = 1; i < n && same; i++)
			same = timestamp2tm(at[i], NULL, &tm2, &fsec, NULL, NULL) == 0 &&
				tm2.tm_year == tm.tm_year && tm2.tm_mon == tm.tm_mon;
		if (same && flush_cache.valid && flush_cache.year == tm.tm_year && flush_cache.mon == tm.tm_mon)
		{
			*name = flush_cache.name;
			return flush_cache.part;
		}
		nsp = get_namespace_oid("crm", false);
		if (same)
		{
			char	   *part = psprintf("audit_log_y%04dm%02d", tm.tm_year, tm.tm_mon);

			relid = get_relname_relid(part, nsp);
			if (OidIsValid(relid) && get_rel_relkind(relid) == RELKIND_RELATION)
			{
				*name = part;
				return relid;
			}
		}
	}
	else
		nsp = get_namespace_oid("crm", false);
	*name = "audit_log";
	return get_relname_relid("audit_log", nsp);
}

/*
 * Is the log complete? While a restore is loading it (tables first, rows, then triggers), crm's
 * catalogs are being restored too: their rows already have their history in the restored log.
 */
static bool ready_known = false;	/* what audit_log_ready() found, until a relcache invalidation */
static bool ready_cached = false;

static bool
audit_log_ready(void)
{
	Oid			nsp;
	Oid			relid;
	Relation	rel;
	bool		ready = false;

	watch_log_relcache();
	if (ready_known)
		return ready_cached;
	nsp = get_namespace_oid("crm", true);
	relid = OidIsValid(nsp) ? get_relname_relid("audit_log", nsp) : InvalidOid;
	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	if (rel->trigdesc)
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
			if (strcmp(rel->trigdesc->triggers[i].tgname, "crm_append_only") == 0)
				ready = true;
	table_close(rel, AccessShareLock);
	/* a parallel restore adds the trigger before all rows may be in (restore.c): not cached, as
	 * nothing invalidates the log when its last index is attached */
	if (ready && !crm_audit_log_loaded(relid))
		return false;
	/* its triggers are part of its relcache entry: adding or dropping one invalidates it */
	ready_known = true;
	ready_cached = ready;
	return ready;
}

/* bulk entries go in (object, record_id) order: their index inserts then walk the index once */
static int
pending_cmp(const void *a, const void *b)
{
	const PendingEntry *x = *(PendingEntry *const *) a;
	const PendingEntry *y = *(PendingEntry *const *) b;
	int			c = strcmp(x->object ? x->object : "", y->object ? y->object : "");

	if (c != 0)
		return c;
	return x->record_id < y->record_id ? -1 : x->record_id > y->record_id ? 1 : 0;
}

#define AUDIT_BATCH 256

/*
 * The fast path: insert the entries straight into the month's partition, with its indexes, as COPY
 * would (no SPI, no plan, no routing; pages filled a batch at a time). Column values are what the
 * defaults would give. Returns false when it cannot (no such partition yet, another layout): the
 * caller uses SQL.
 */
static bool
direct_insert(List *todo, bool sort)
{
	Oid			seq;
	TimestampTz *ts;
	char	   *name;
	Oid			relid;
	int			n = list_length(todo), i = 0;
	ListCell   *lc;
	Relation	rel;
	TupleDesc	desc;
	static const char *const cols[] = {"id", "logged_at", "xid", "era", "principal_id", "session_user_name",
		"current_user_name", "client_addr", "application_name", "action", "object", "record_id", "detail"};
	int			att[13];
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slots[AUDIT_BATCH];
	int			nslots = Min(n, AUDIT_BATCH), k = 0;
	PendingEntry **order;
	Datum	   *values;
	bool	   *nulls;
	int64		xid = (int64) U64FromFullTransactionId(GetTopFullTransactionId());
	int64		era;
	static Oid	session_oid = InvalidOid;
	static NameData session_name;
	Datum		addr = (Datum) 0;
	bool		addr_null = true;
	Datum		session_d, app_d;
	BulkInsertState bis = NULL;
	CommandId	cid;
	MemoryContext rowcxt;

	ts = palloc(sizeof(TimestampTz) * n);
	order = palloc(sizeof(PendingEntry *) * n);
	foreach(lc, todo)
	{
		order[i] = lfirst(lc);
		ts[i] = order[i]->at;
		i++;
	}
	relid = flush_relation(ts, n, &name);
	if (!OidIsValid(relid) || strcmp(name, "audit_log") == 0)
		return false;
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	if (flush_cache.valid && flush_cache.part == relid)
	{
		seq = flush_cache.seq;
		memcpy(att, flush_cache.att, sizeof(att));
	}
	else
	{
		struct pg_tm tm;
		fsec_t		fsec;
		Oid			nsp = get_namespace_oid("crm", false);

		seq = get_relname_relid("audit_log_id_seq", nsp);
		for (int c = 0; c < 13; c++)
			if ((att[c] = SPI_fnumber(desc, cols[c])) <= 0 || !OidIsValid(seq))
			{
				table_close(rel, RowExclusiveLock);
				return false;
			}
		/* the relation is locked now: what was looked up stays true until an invalidation says not */
		if (timestamp2tm(ts[0], NULL, &tm, &fsec, NULL, NULL) == 0)
		{
			flush_cache.year = tm.tm_year;
			flush_cache.mon = tm.tm_mon;
			flush_cache.part = relid;
			strlcpy(flush_cache.name, name, NAMEDATALEN);
			flush_cache.seq = seq;
			memcpy(flush_cache.att, att, sizeof(att));
			flush_cache.valid = true;
		}
	}
	if (n > 1 && sort)
		qsort(order, n, sizeof(PendingEntry *), pending_cmp);
	{
		uint64		kk[2] = {GetSystemIdentifier(), (uint64) MyDatabaseId};

		era = (int64) (hash_bytes_extended((const unsigned char *) kk, sizeof(kk), 0x63726d) & INT64CONST(0x7fffffffffffffff));
	}
	if (session_oid != GetSessionUserId())
	{
		namestrcpy(&session_name, GetUserNameFromId(GetSessionUserId(), false));
		session_oid = GetSessionUserId();
	}
	{
		char		host[64];

		crm_client_addr(MyProcPort, host, sizeof(host));
		if (host[0] != '\0')
		{
			addr = DirectFunctionCall1(inet_in, CStringGetDatum(host));
			addr_null = false;
		}
	}
	session_d = CStringGetTextDatum(NameStr(session_name));
	app_d = CStringGetTextDatum(application_name ? application_name : "");
	estate = CreateExecutorState();
	cid = GetCurrentCommandId(true);
	estate->es_output_cid = cid;
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	for (int s = 0; s < nslots; s++)
		slots[s] = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	if (n > 1)
		bis = GetBulkInsertState();
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "crm audit rows", ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < n; i++)
	{
		PendingEntry *p = order[i];
		MemoryContext old = MemoryContextSwitchTo(rowcxt);

		for (int c = 0; c < desc->natts; c++)
			nulls[c] = true;
#define SETV(c, v) do { values[att[c] - 1] = (v); nulls[att[c] - 1] = false; } while (0)
		SETV(0, Int64GetDatum(nextval_internal(seq, false)));
		SETV(1, TimestampTzGetDatum(p->at));
		SETV(2, Int64GetDatum(xid));
		SETV(3, Int64GetDatum(era));
		if (p->principal != 0)
			SETV(4, Int64GetDatum(p->principal));
		SETV(5, p->session_user_name ? CStringGetTextDatum(p->session_user_name) : session_d);
		SETV(6, CStringGetTextDatum(p->current_user_name));
		if (p->session_user_name ? p->client_addr != NULL : !addr_null)
			SETV(7, p->session_user_name ? DirectFunctionCall1(inet_in, CStringGetDatum(p->client_addr)) : addr);
		SETV(8, p->session_user_name ? CStringGetTextDatum(p->app ? p->app : "") : app_d);
		SETV(9, CStringGetTextDatum(p->action));
		if (p->object)
			SETV(10, CStringGetTextDatum(p->object));
		if (p->record_id != 0)
			SETV(11, Int64GetDatum(p->record_id));
		if (p->jdetail)
			SETV(12, JsonbPGetDatum(p->jdetail));
		else if (p->detail)
			SETV(12, DirectFunctionCall1(jsonb_in, CStringGetDatum(p->detail)));
#undef SETV
		ExecStoreHeapTuple(heap_form_tuple(desc, values, nulls), slots[k++], true);
		MemoryContextSwitchTo(old);
		if (k == nslots || i == n - 1)
		{
			/*
			 * The log is append-only: entries go at its end, never into the crumbs of free space
			 * vacuum records in old pages (measured: looking those up and reading the pages in
			 * cost half of all the audit's writing on a freshly vacuumed log).
			 */
			if (k == 1)
				table_tuple_insert(rel, slots[0], cid, TABLE_INSERT_SKIP_FSM, NULL);
			else
				table_multi_insert(rel, slots, k, cid, TABLE_INSERT_SKIP_FSM, bis);
			for (int s = 0; s < k; s++)
			{
				ExecInsertIndexTuples(rri, slots[s], estate, false, false, NULL, NIL);
				ExecClearTuple(slots[s]);
			}
			k = 0;
			MemoryContextReset(rowcxt);
		}
	}
	MemoryContextDelete(rowcxt);
	if (bis)
	{
		table_finish_bulk_insert(rel, 0);
		FreeBulkInsertState(bis);
	}
	for (int s = 0; s < nslots; s++)
		ExecDropSingleTupleTableSlot(slots[s]);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	/* written: their memory is not needed until the transaction ends */
	for (i = 0; i < n; i++)
	{
		if (order[i]->session_user_name)
			continue;			/* the caller's (crm_audit_insert_rows) */
		if (order[i]->detail)
			pfree(order[i]->detail);
		if (order[i]->jdetail)
			pfree(order[i]->jdetail);
		pfree(order[i]);
	}
	pfree(order);
	pfree(ts);
	return true;
}

/*
 * The audit writer's batch: events of other sessions, inserted in the order given (WAL order)
 * the way this session's own entries are. Every string must be valid in the database encoding;
 * detail is JSON text (an invalid one raises the error jsonb's input does). Returns false, having
 * written nothing, when there is no partition for them yet (the caller then uses SQL).
 */
bool
crm_audit_insert_rows(const CrmAuditRow *rows, int n)
{
	PendingEntry *e = palloc0(sizeof(PendingEntry) * n);
	List	   *todo = NIL;
	bool		ok;

	for (int i = 0; i < n; i++)
	{
		e[i].at = rows[i].at;
		e[i].principal = rows[i].principal;
		e[i].session_user_name = rows[i].session_user;
		e[i].current_user_name = (char *) rows[i].current_user;
		e[i].client_addr = rows[i].client_addr;
		e[i].app = rows[i].app;
		e[i].action = (char *) rows[i].action;
		e[i].object = (char *) rows[i].object;
		e[i].record_id = rows[i].record_id;
		e[i].detail = (char *) rows[i].detail;
		todo = lappend(todo, &e[i]);
	}
	ok = n > 0 && audit_log_ready() && direct_insert(todo, false);
	list_free(todo);
	pfree(e);
	return ok;
}

void
crm_audit_flush_pending(void)
{
	int			n = list_length(pending);
	Datum	   *at, *pr, *cu, *ac, *ob, *ri, *de;
	bool	   *nn_pr, *nn_ob, *nn_ri, *nn_de;
	CrmUserSwitch sw;
	ListCell   *lc;
	int			i = 0;
	List	   *todo = pending;

	if (n == 0)
		return;
	if (!audit_log_ready())
	{
		pending = NIL;
		return;
	}
	/* straight into the partition (any number of entries); SQL only when there is no such partition */
	if (direct_insert(todo, true))
	{
		list_free(todo);
		pending = NIL;
		crm_auditq_mark_dirty();
		return;
	}
	at = palloc(sizeof(Datum) * n);
	pr = palloc(sizeof(Datum) * n);
	cu = palloc(sizeof(Datum) * n);
	ac = palloc(sizeof(Datum) * n);
	ob = palloc(sizeof(Datum) * n);
	ri = palloc(sizeof(Datum) * n);
	de = palloc(sizeof(Datum) * n);
	nn_pr = palloc(sizeof(bool) * n);
	nn_ob = palloc(sizeof(bool) * n);
	nn_ri = palloc(sizeof(bool) * n);
	nn_de = palloc(sizeof(bool) * n);
	foreach(lc, todo)
	{
		PendingEntry *p = lfirst(lc);

		at[i] = TimestampTzGetDatum(p->at);
		pr[i] = Int64GetDatum(p->principal);
		nn_pr[i] = p->principal == 0;
		cu[i] = CStringGetTextDatum(p->current_user_name);
		ac[i] = CStringGetTextDatum(p->action);
		ob[i] = p->object ? CStringGetTextDatum(p->object) : (Datum) 0;
		nn_ob[i] = p->object == NULL;
		ri[i] = Int64GetDatum(p->record_id);
		nn_ri[i] = p->record_id == 0;
		if (p->jdetail)
			de[i] = CStringGetTextDatum(JsonbToCString(NULL, &p->jdetail->root, VARSIZE(p->jdetail)));
		else
			de[i] = p->detail ? CStringGetTextDatum(p->detail) : (Datum) 0;
		nn_de[i] = p->detail == NULL && p->jdetail == NULL;
		i++;
	}
	pending = NIL;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		int			dims[1] = {n};
		int			lbs[1] = {1};
		Datum		args[7];
		Oid			types[7] = {TIMESTAMPTZARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		INT8ARRAYOID, TEXTARRAYOID};

		TimestampTz *ts = palloc(sizeof(TimestampTz) * n);
		char	   *target_name;
		Oid			target;

		for (int k = 0; k < n; k++)
			ts[k] = DatumGetTimestampTz(at[k]);
		target = flush_relation(ts, n, &target_name);
		SPI_connect();
		if (target != flush_target)
		{
			if (flush_one_plan)
				SPI_freeplan(flush_one_plan);
			if (flush_plan)
				SPI_freeplan(flush_plan);
			flush_one_plan = flush_plan = NULL;
			flush_target = target;
		}
		if (n == 1)
		{
			Oid			t1[7] = {TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID};
			Datum		v1[7] = {at[0], pr[0], cu[0], ac[0], ob[0], ri[0], de[0]};
			char		n1[7] = {' ', nn_pr[0] ? 'n' : ' ', ' ', ' ', nn_ob[0] ? 'n' : ' ', nn_ri[0] ? 'n' : ' ', nn_de[0] ? 'n' : ' '};

			if (flush_one_plan == NULL)
			{
				SPIPlanPtr	p = SPI_prepare(psprintf("INSERT INTO crm.%s (logged_at, principal_id, current_user_name, action, object, record_id, detail)"
													 " VALUES ($1, $2, $3, $4, $5, $6, $7::pg_catalog.jsonb)", quote_identifier(target_name)), 7, t1);

				if (p == NULL)
					elog(ERROR, "crm audit insert could not be prepared: %s", SPI_result_code_string(SPI_result));
				SPI_keepplan(p);
				flush_one_plan = p;
			}
			if (SPI_execute_plan(flush_one_plan, v1, n1, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "crm audit insert failed");
		}
		else
		{
			if (flush_plan == NULL)
			{
				SPIPlanPtr	p = SPI_prepare(psprintf("INSERT INTO crm.%s (logged_at, principal_id, current_user_name, action, object, record_id, detail)"
												 " SELECT u.a, u.p, u.c, u.x, u.o, u.r, u.d::pg_catalog.jsonb"
												 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4),"
												 " pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) AS u(a, p, c, x, o, r, d)",
												 quote_identifier(target_name)),
										7, types);

				if (p == NULL)
					elog(ERROR, "crm audit insert could not be prepared: %s", SPI_result_code_string(SPI_result));
				SPI_keepplan(p);
				flush_plan = p;
			}
			args[0] = PointerGetDatum(construct_md_array(at, NULL, 1, dims, lbs, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			args[1] = PointerGetDatum(construct_md_array(pr, nn_pr, 1, dims, lbs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			args[2] = PointerGetDatum(construct_md_array(cu, NULL, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
			args[3] = PointerGetDatum(construct_md_array(ac, NULL, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
			args[4] = PointerGetDatum(construct_md_array(ob, nn_ob, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
			args[5] = PointerGetDatum(construct_md_array(ri, nn_ri, 1, dims, lbs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			args[6] = PointerGetDatum(construct_md_array(de, nn_de, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
			if (SPI_execute_plan(flush_plan, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "crm audit insert failed");
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	crm_auditq_mark_dirty();
}

/* --- the row trigger ------------------------------------------------------------------------------------ */

/* jsonb built directly (no JSON text to write and parse again) */
static void
jb_string(JsonbParseState **st, JsonbIteratorToken tok, const char *str, int len)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) str;
	v.val.string.len = len;
	pushJsonbValue(st, tok, &v);
}

static void
jb_key(JsonbParseState **st, const char *key)
{
	jb_string(st, WJB_KEY, key, strlen(key));
}

/* "key": value, or "key_hash": keyed hash for protected fields; NULL stays null */
static void
append_value(JsonbParseState **st, AuditRel *ar, TupleDesc desc, int att, Datum v, bool isnull, const char *key, Relation rel,
			 HeapTuple tup, CrmAuditSubject *subj)
{
	Form_pg_attribute a = TupleDescAttr(desc, att - 1);
	int			kind = ar->kind[att - 1];

	if (isnull)
	{
		JsonbValue	nv;

		nv.type = jbvNull;
		jb_key(st, key);
		pushJsonbValue(st, WJB_VALUE, &nv);
		return;
	}
	if (kind == AF_PLAIN)
	{
		char	   *str = OutputFunctionCall(&ar->out[att - 1], v);
		size_t		len = strlen(str);

		if (len > (size_t) crm_audit_max_value_bytes)
		{
			/* bounded entries: a huge value is recorded as its hash and length */
			uint8		h[32];
			StringInfoData hx;
			JsonbValue	n;

			crm_sha256(str, len, h);
			initStringInfo(&hx);
			for (int i = 0; i < 32; i++)
				appendStringInfo(&hx, "%02x", h[i]);
			jb_key(st, psprintf("%s_sha256", key));
			jb_string(st, WJB_VALUE, hx.data, hx.len);
			jb_key(st, psprintf("%s_bytes", key));
			n.type = jbvNumeric;
			n.val.numeric = int64_to_numeric((int64) len);
			pushJsonbValue(st, WJB_VALUE, &n);
		}
		else
		{
			jb_key(st, key);
			jb_string(st, WJB_VALUE, str, len);
		}
	}
	else
	{
		StringInfoData h;
		char	   *str;

		if (kind == AF_ENCRYPTED)
			str = crm_crypt_plaintext(rel, NameStr(a->attname), DatumGetTextPP(v));
		else
			str = OutputFunctionCall(&ar->out[att - 1], v);
		initStringInfo(&h);
		crm_audit_row_subject(rel, ar->object, tup, subj);
		crm_audit_value_hash(ar->object, subj, NameStr(a->attname), str, strlen(str), &h);
		jb_key(st, psprintf("%s_hash", key));
		jb_string(st, WJB_VALUE, h.data, h.len);
	}
}

/* equality of two stored values (binary: what is stored is what counts) */
static bool
same_value(TupleDesc desc, int att, Datum a, bool an, Datum b, bool bn)
{
	Form_pg_attribute at = TupleDescAttr(desc, att - 1);

	if (an || bn)
		return an == bn;
	return datumIsEqual(a, b, at->attbyval, at->attlen);
}

/* crm's audit triggers write entries only for crm's own tables (else anyone could forge them) */
static void
audit_trigger_table(Relation rel)
{
	Oid			nsp = RelationGetNamespace(rel);

	if (nsp != get_namespace_oid("crm_data", true) && nsp != get_namespace_oid("crm", true))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("crm's audit triggers may only be used on crm's tables"),
				 errdetail("Table %s is not in crm_data or crm.", crm_shortn(RelationGetRelationName(rel), 256))));
}

/* SQL function: crm._audit_row() returns trigger (AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW) */
PG_FUNCTION_INFO_V1(crm_audit_row);
Datum
crm_audit_row(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	AuditRel   *ar;
	JsonbParseState *st = NULL;
	Jsonb	   *detail;
	HeapTuple	row;
	const char *action;
	bool		any = false;
	bool		isnull;
	int64		id;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm._audit_row() must be an AFTER ROW trigger")));
	rel = td->tg_relation;
	audit_trigger_table(rel);
	desc = RelationGetDescr(rel);
	ar = audit_rel(rel);
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	/* on crm's catalogs the trigger names the event (GRANT, SHARE, POLICY, DDL ...) */
	if (td->tg_trigger->tgnargs > 0)
	{
		const char *op = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "UPDATE" : TRIGGER_FIRED_BY_INSERT(td->tg_event) ? "INSERT" : "DELETE";

		jb_key(&st, "operation");
		jb_string(&st, WJB_VALUE, op, strlen(op));
	}
	jb_key(&st, "fields");
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		HeapTuple	o = td->tg_trigtuple, n = td->tg_newtuple;
		CrmAuditSubject osubj = {0}, nsubj = {0};
		Datum	   *ovs = palloc(sizeof(Datum) * desc->natts), *nvs = palloc(sizeof(Datum) * desc->natts);
		bool	   *ons = palloc(sizeof(bool) * desc->natts), *nns = palloc(sizeof(bool) * desc->natts);

		action = "UPDATE";
		row = n;
		/* each row once, not attribute by attribute (that walks the row again for every column) */
		heap_deform_tuple(o, desc, ovs, ons);
		heap_deform_tuple(n, desc, nvs, nns);
		for (int att = 1; att <= desc->natts; att++)
		{
			bool		on = ons[att - 1], nn = nns[att - 1];
			Datum		ov = ovs[att - 1], nv = nvs[att - 1];

			if (ar->kind[att - 1] == AF_SKIP || TupleDescAttr(desc, att - 1)->attisdropped)
				continue;
			if (same_value(desc, att, ov, on, nv, nn))
				continue;
			jb_key(&st, NameStr(TupleDescAttr(desc, att - 1)->attname));
			pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
			append_value(&st, ar, desc, att, ov, on, "old", rel, o, &osubj);
			append_value(&st, ar, desc, att, nv, nn, "new", rel, n, &nsubj);
			pushJsonbValue(&st, WJB_END_OBJECT, NULL);
			any = true;
		}
		if (!any)
			return PointerGetDatum(NULL);	/* an UPDATE that changes nothing writes nothing */
	}
	else
	{
		bool		ins = TRIGGER_FIRED_BY_INSERT(td->tg_event);
		CrmAuditSubject subj = {0};
		Datum	   *vs = palloc(sizeof(Datum) * desc->natts);
		bool	   *ns = palloc(sizeof(bool) * desc->natts);

		action = ins ? "INSERT" : "DELETE";
		row = td->tg_trigtuple;
		heap_deform_tuple(row, desc, vs, ns);
		for (int att = 1; att <= desc->natts; att++)
		{
			if (ar->kind[att - 1] == AF_SKIP || ns[att - 1] || TupleDescAttr(desc, att - 1)->attisdropped)
				continue;
			jb_key(&st, NameStr(TupleDescAttr(desc, att - 1)->attname));
			pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
			append_value(&st, ar, desc, att, vs[att - 1], false, ins ? "new" : "old", rel, row, &subj);
			pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		}
	}
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	detail = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
	{
		int			idatt = SPI_fnumber(desc, "id");

		if (idatt > 0 && TupleDescAttr(desc, idatt - 1)->atttypid == INT8OID)
			id = DatumGetInt64(heap_getattr(row, idatt, desc, &isnull));
		else
			isnull = true;
	}
	if (td->tg_trigger->tgnargs > 0)
		action = td->tg_trigger->tgargs[0];
	add_pending_jsonb(action, ar->object, isnull ? 0 : id, NULL, detail);
	return PointerGetDatum(NULL);
}

/* SQL function: crm._audit_flush() returns trigger (AFTER ... FOR EACH STATEMENT, and TRUNCATE) */
PG_FUNCTION_INFO_V1(crm_audit_flush);
Datum
crm_audit_flush(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm._audit_flush() must be a statement trigger")));
	audit_trigger_table(td->tg_relation);
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		add_pending("TRUNCATE", RelationGetRelationName(td->tg_relation), 0, NULL);
	crm_audit_flush_pending();
	return PointerGetDatum(NULL);
}

/*
 * Write one event now, in the caller's transaction (GRANT, SHARE, POLICY, ACT_AS, DDL ...).
 */
void
crm_audit_event(const char *action, const char *object, int64 record_id, const char *detail)
{
	add_pending(action, object, record_id, detail);
	/* the session's user, not a SECURITY DEFINER function's owner */
	((PendingEntry *) llast(pending))->current_user_name =
		MemoryContextStrdup(TopTransactionContext, GetUserNameFromId(GetOuterUserId(), false));
	crm_audit_flush_pending();
}

/* SQL function: crm._audit_event(action text, object text, record_id bigint, detail jsonb) returns void */
PG_FUNCTION_INFO_V1(crm_audit_event_sql);
Datum
crm_audit_event_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("audit action must not be NULL")));
	crm_audit_event(text_to_cstring(PG_GETARG_TEXT_PP(0)),
					PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)),
					PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2),
					PG_ARGISNULL(3) ? NULL : DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(3))));
	PG_RETURN_VOID();
}

/* SQL function: crm._audit_append_only() returns trigger */
PG_FUNCTION_INFO_V1(crm_audit_append_only);
Datum
crm_audit_append_only(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s is append-only", crm_short(CALLED_AS_TRIGGER(fcinfo) ? RelationGetRelationName(td->tg_relation) : "the audit log")),
			 errdetail("Audit entries and blocks are never updated, deleted or truncated, by anyone."),
			 errhint("Old months leave through crm.audit_retention().")));
	PG_RETURN_NULL();
}

/*
 * SQL function: crm._audit_detach(partition text) returns void
 * Retention's DDL: detach and drop one monthly partition that ended more than a month ago. The
 * only DDL the utility guard lets through on the log (crm.audit_retention() audits it first).
 */
PG_FUNCTION_INFO_V1(crm_audit_detach);
Datum
crm_audit_detach(PG_FUNCTION_ARGS)
{
	char	   *part = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			y, m;
	char		tail;

	if (sscanf(part, "audit_log_y%4dm%2d%c", &y, &m, &tail) != 2 || strlen(part) != 18)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not a monthly audit partition", crm_short(part))));
	PG_TRY();
	{
		Oid			types[1] = {TEXTOID};
		Datum		vals[1] = {CStringGetTextDatum(part)};

		SPI_connect();
		if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid"
								  " WHERE i.inhparent OPERATOR(pg_catalog.=) 'crm.audit_log'::pg_catalog.regclass AND c.relname OPERATOR(pg_catalog.=) $1"
								  " AND pg_catalog.to_date(pg_catalog.substr($1, 12, 4) OPERATOR(pg_catalog.||) pg_catalog.substr($1, 17, 2), 'YYYYMM')"
								  "     OPERATOR(pg_catalog.+) pg_catalog.make_interval(months => 2) OPERATOR(pg_catalog.<=) pg_catalog.now()",
								  1, types, vals, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "crm audit partition lookup failed");
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("audit partition %s is not a partition that ended more than a month ago", crm_short(part))));
		crm_audit_internal_ddl = true;
		SPI_execute(psprintf("ALTER TABLE crm.audit_log DETACH PARTITION crm.%s", quote_identifier(part)), false, 0);
		SPI_execute(psprintf("DROP TABLE crm.%s", quote_identifier(part)), false, 0);
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_audit_internal_ddl = false;
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/* --- canonical entries, sealing, verification ------------------------------------------------------- */

/*
 * An entry's canonical bytes, column by column: 'n' for NULL, else 'v' and the value: 8 bytes
 * big-endian for id, logged_at, era, principal_id and record_id; for the others an 8-byte length
 * and their text (xid in decimal, client_addr as inet's text cast shows it, detail as jsonb prints).
 */
#define ENTRY_COLS "l.id, l.logged_at, l.xid, l.era, l.principal_id, l.session_user_name, l.current_user_name," \
	" l.client_addr, l.application_name, l.action, l.object, l.record_id, l.detail"

static void
put_text(StringInfo s, const char *p, size_t len)
{
	put64(s, len);
	appendBinaryStringInfo(s, p, len);
}

/* SHA-256 of an entry's canonical bytes, from a row of ENTRY_COLS (s: scratch buffer) */
static void
entry_hash(HeapTuple t, TupleDesc d, StringInfo s, uint8 *out, int64 *id)
{
	Datum		v[13];
	bool		isnull[13];

	resetStringInfo(s);
	heap_deform_tuple(t, d, v, isnull);
	for (int c = 0; c < 13; c++)
	{
		appendStringInfoChar(s, isnull[c] ? 'n' : 'v');
		if (isnull[c])
			continue;
		switch (c)
		{
			case 0:				/* id */
			case 1:				/* logged_at */
			case 3:				/* era */
			case 4:				/* principal_id */
			case 11:			/* record_id */
				put64(s, (uint64) DatumGetInt64(v[c]));
				break;
			case 2:				/* xid */
				{
					char		buf[32];
					int			len = snprintf(buf, sizeof(buf), INT64_FORMAT, DatumGetInt64(v[c]));

					put_text(s, buf, len);
				}
				break;
			case 7:				/* client_addr */
				{
					text	   *x = DatumGetTextPP(DirectFunctionCall1(network_show, v[c]));

					put_text(s, VARDATA_ANY(x), VARSIZE_ANY_EXHDR(x));
				}
				break;
			case 12:			/* detail */
				{
					Jsonb	   *j = DatumGetJsonbP(v[c]);
					StringInfoData js;

					initStringInfo(&js);
					JsonbToCString(&js, &j->root, VARSIZE(j));
					put_text(s, js.data, js.len);
					pfree(js.data);
					if ((Pointer) j != DatumGetPointer(v[c]))
						pfree(j);
				}
				break;
			default:
				{
					text	   *x = DatumGetTextPP(v[c]);

					put_text(s, VARDATA_ANY(x), VARSIZE_ANY_EXHDR(x));
					if ((Pointer) x != DatumGetPointer(v[c]))
						pfree(x);
				}
				break;
		}
	}
	sha256(s->data, s->len, out);
	*id = DatumGetInt64(v[0]);
}

static void
chain_step(const uint8 *prev, const uint8 *e, uint8 *out)
{
	uint8		buf[64];

	memcpy(buf, prev, 32);
	memcpy(buf + 32, e, 32);
	sha256(buf, 64, out);
}

static void
block_hash(const uint8 *prev, int64 block_no, int64 era, const char *lo, const char *hi, int32 n,
		   const uint8 *last, uint8 *out)
{
	StringInfoData s;

	initStringInfo(&s);
	appendBinaryStringInfo(&s, (const char *) prev, 32);
	put64(&s, block_no);
	put64(&s, era);
	appendStringInfo(&s, "%s|%s|%d|", lo, hi, n);
	appendBinaryStringInfo(&s, (const char *) last, 32);
	sha256(s.data, s.len, out);
	pfree(s.data);
}

/*
 * Walk the entries of (era, [lo, hi)) in id order, feeding each (id, entry hash) to cb. Streams
 * through a cursor, so a block of any size fits.
 */
typedef bool (*entry_cb) (void *arg, int64 id, const uint8 *e);

typedef struct EntryHash
{
	int64		id;
	uint8		h[32];
} EntryHash;

static int
entry_hash_cmp(const void *a, const void *b)
{
	int64		x = ((const EntryHash *) a)->id, y = ((const EntryHash *) b)->id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Walk the entries of (era, [lo, hi)) in id order, feeding each (id, entry hash) to cb. The rows
 * stream through a cursor in whatever order the scan finds them; only (id, hash) pairs are kept
 * and sorted, 40 bytes an entry, rather than sorting the rows themselves.
 */
static void
walk_entries(int64 era, const char *lo, const char *hi, entry_cb cb, void *arg, bool fresh)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		vals[3] = {Int64GetDatum(era), CStringGetTextDatum(lo), CStringGetTextDatum(hi)};
	SPIPlanPtr	plan;
	Portal		portal;
	EntryHash  *all;
	Size		n = 0, cap = 1024;
	StringInfoData buf;
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "crm audit walk", ALLOCSET_DEFAULT_SIZES);

	plan = SPI_prepare("SELECT " ENTRY_COLS " FROM crm.audit_log l WHERE l.era OPERATOR(pg_catalog.=) $1"
					   " AND l.xid OPERATOR(pg_catalog.>=) $2::pg_catalog.int8 AND l.xid OPERATOR(pg_catalog.<) $3::pg_catalog.int8",
					   3, types);
	if (plan == NULL)
		elog(ERROR, "crm audit scan could not be prepared");
	all = palloc_extended(sizeof(EntryHash) * cap, MCXT_ALLOC_HUGE);
	initStringInfo(&buf);
	/* sealing reads with a snapshot taken after its horizon: every entry below it is visible */
	portal = SPI_cursor_open(NULL, plan, vals, NULL, !fresh);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 2000);
		if (SPI_processed == 0)
			break;
		if (n + SPI_processed > cap)
		{
			while (n + SPI_processed > cap)
				cap *= 2;
			all = repalloc_huge(all, sizeof(EntryHash) * cap);
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(rowcxt);

			entry_hash(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &buf, all[n].h, &all[n].id);
			n++;
			MemoryContextSwitchTo(old);
			MemoryContextReset(rowcxt);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	MemoryContextDelete(rowcxt);
	pfree(buf.data);
	if (n > 1)
		qsort(all, n, sizeof(EntryHash), entry_hash_cmp);
	for (Size i = 0; i < n; i++)
		if (!cb(arg, all[i].id, all[i].h))
			break;
	pfree(all);
}

typedef struct SealState
{
	uint8		h[32];
	StringInfoData chain;
	List	   *ids;			/* of int64 in a palloc'd array, grown */
	int64	   *idv;
	int			n;
	int			cap;
} SealState;

static bool
seal_cb(void *arg, int64 id, const uint8 *e)
{
	SealState  *s = arg;

	chain_step(s->h, e, s->h);
	appendBinaryStringInfo(&s->chain, (const char *) s->h, 32);
	if (s->n == s->cap)
	{
		s->cap *= 2;
		s->idv = repalloc(s->idv, sizeof(int64) * s->cap);
	}
	s->idv[s->n++] = id;
	return true;
}

/* Seal one era's entries in [lo, hi) into a new block; returns the number sealed. */

/*
 * Keep the log's BRIN index on (era, xid) summarized up to the last complete block range, so that
 * a seal reads only the ranges holding its transactions and the partial range at the end. Writers
 * then pay nothing for the index (a range that is not summarized yet costs an insert nothing), and
 * the sealer does not reread everything since the last vacuum. Skipped for a partition that
 * (auto)vacuum is working on: the next seal catches up.
 */
static void
summarize_log_ranges_now(void)
{
	uint64		n;
	SPITupleTable *tt;

	if (SPI_execute("SELECT i.indexrelid, i.indrelid FROM pg_catalog.pg_inherits h"
					" JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) h.inhrelid AND i.indisvalid"
					" JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid"
					" JOIN pg_catalog.pg_am a ON a.oid OPERATOR(pg_catalog.=) c.relam AND a.amname OPERATOR(pg_catalog.=) 'brin'"
					" WHERE h.inhparent OPERATOR(pg_catalog.=) 'crm.audit_log'::pg_catalog.regclass",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "crm audit index lookup failed");
	if (RecoveryInProgress())
		return;
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Oid			index = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		Oid			heap = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		Relation	hrel, irel;
		BlockNumber nblocks, ppr;

		if (!ConditionalLockRelationOid(heap, ShareUpdateExclusiveLock))
			continue;
		hrel = table_open(heap, NoLock);
		irel = index_open(index, AccessShareLock);
		nblocks = RelationGetNumberOfBlocks(hrel);
		ppr = BrinGetPagesPerRange(irel);
		index_close(irel, AccessShareLock);
		table_close(hrel, NoLock);
		/* from the last complete range back to the first one already summarized */
		for (int64 k = (int64) (nblocks / ppr) - 1, done = 0; k >= 0 && done < 4096; k--, done++)
		{
			if (DatumGetInt32(DirectFunctionCall2(brin_summarize_range, ObjectIdGetDatum(index),
												  Int64GetDatum(k * (int64) ppr))) == 0 && done > 0)
				break;
		}
		UnlockRelationOid(heap, ShareUpdateExclusiveLock);
	}
}

/* the same, never in the way of sealing: a failure (a lock, a permission) is logged and skipped */
static void
summarize_log_ranges(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		summarize_log_ranges_now();
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(LOG, (errmsg("crm audit: block ranges of the log were not summarized: %s", e->message)));
		FreeErrorData(e);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

static int64
seal_range(int64 era, const char *lo, const char *hi)
{
	SealState	s;
	uint8		prev[32];
	int64		block_no = 1;
	uint8		bh[32];
	Datum		out[2];
	bool		nulls[2];

	memset(&s, 0, sizeof(s));
	memset(prev, 0, 32);
	if (SPI_execute("SELECT b.block_no, b.block_hash FROM crm.audit_block b ORDER BY b.block_no DESC LIMIT 1", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "crm audit block lookup failed");
	if (SPI_processed == 1)
	{
		out[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &nulls[0]);
		out[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &nulls[1]);
		block_no = DatumGetInt64(out[0]) + 1;
		memcpy(prev, VARDATA_ANY(DatumGetByteaPP(out[1])), 32);
	}
	memcpy(s.h, prev, 32);
	initStringInfo(&s.chain);
	s.cap = 1024;
	s.idv = palloc(sizeof(int64) * s.cap);
	walk_entries(era, lo, hi, seal_cb, &s, true);
	if (s.n == 0)
		return 0;
	block_hash(prev, block_no, era, lo, hi, s.n, s.h, bh);
	{
		Oid			types[10] = {INT8OID, INT8OID, TEXTOID, TEXTOID, INT4OID, INT8ARRAYOID, BYTEAOID, BYTEAOID, BYTEAOID, INT4OID};
		Datum		v[10];
		Datum	   *idd = palloc(sizeof(Datum) * s.n);

		for (int i = 0; i < s.n; i++)
			idd[i] = Int64GetDatum(s.idv[i]);
		v[0] = Int64GetDatum(block_no);
		v[1] = Int64GetDatum(era);
		v[2] = CStringGetTextDatum(lo);
		v[3] = CStringGetTextDatum(hi);
		v[4] = Int32GetDatum(s.n);
		v[5] = PointerGetDatum(construct_array(idd, s.n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		{
			bytea	   *c = palloc(VARHDRSZ + s.chain.len);
			bytea	   *p = palloc(VARHDRSZ + 32);
			bytea	   *b = palloc(VARHDRSZ + 32);

			SET_VARSIZE(c, VARHDRSZ + s.chain.len);
			memcpy(VARDATA(c), s.chain.data, s.chain.len);
			SET_VARSIZE(p, VARHDRSZ + 32);
			memcpy(VARDATA(p), prev, 32);
			SET_VARSIZE(b, VARHDRSZ + 32);
			memcpy(VARDATA(b), bh, 32);
			v[6] = PointerGetDatum(c);
			v[7] = PointerGetDatum(p);
			v[8] = PointerGetDatum(b);
		}
		v[9] = Int32GetDatum(0);
		if (SPI_execute_with_args("INSERT INTO crm.audit_block (block_no, era, lo_xid, hi_xid, entries, first_id, last_id, ids, chain, prev_hash, block_hash)"
								  " VALUES ($1, $2, $3::pg_catalog.int8, $4::pg_catalog.int8, $5, $6[1], $6[$5], $6, $7, $8, $9)",
								  9, types, v, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "crm audit block insert failed");
	}
	return s.n;
}

/* Seal everything sealable; runs as crm's owner. */
int64
crm_audit_seal_internal(void)
{
	CrmUserSwitch sw;
	volatile int64 n = 0;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		int64		era;
		bool		isnull;
		char	   *hi, *lo;

		SPI_connect();
		/* one sealer at a time; writers are not blocked (they never lock audit_block) */
		if (SPI_execute("LOCK TABLE crm.audit_block IN EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "crm audit lock failed");
		if (SPI_execute("SELECT crm._audit_era(), (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::pg_catalog.text)::pg_catalog.int8::pg_catalog.text",
						false, 1) != SPI_OK_SELECT)
			elog(ERROR, "crm audit horizon failed");
		era = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		hi = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		/*
		 * Entries of another era (a restore, an upgrade) that were never sealed: that era is over,
		 * so every one of its transactions has ended. Checked while this era has no block yet.
		 */
		{
			Oid			t1[1] = {INT8OID};
			Datum		v1[1] = {Int64GetDatum(era)};

			if (SPI_execute_with_args("SELECT 1 FROM crm.audit_block b WHERE b.era OPERATOR(pg_catalog.=) $1 LIMIT 1",
									  1, t1, v1, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "crm audit block lookup failed");
			if (SPI_processed == 0)
			{
				SPITupleTable *tt;
				uint64		rows;

				if (SPI_execute_with_args("SELECT e.era, COALESCE((SELECT pg_catalog.max(b.hi_xid) FROM crm.audit_block b WHERE b.era OPERATOR(pg_catalog.=) e.era), 0::pg_catalog.int8)::pg_catalog.text"
										  " FROM (SELECT DISTINCT l.era FROM crm.audit_log l WHERE l.era OPERATOR(pg_catalog.<>) $1) e ORDER BY 1",
										  1, t1, v1, NULL, false, 0) != SPI_OK_SELECT)
					elog(ERROR, "crm audit era lookup failed");
				tt = SPI_tuptable;
				rows = SPI_processed;
				for (uint64 i = 0; i < rows; i++)
				{
					int64		old_era = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));

					n += seal_range(old_era, SPI_getvalue(tt->vals[i], tt->tupdesc, 2), "9223372036854775807");
				}
			}
		}
		{
			Oid			t1[1] = {INT8OID};
			Datum		v1[1] = {Int64GetDatum(era)};

			if (SPI_execute_with_args("SELECT COALESCE(pg_catalog.max(b.hi_xid), 0::pg_catalog.int8)::pg_catalog.text FROM crm.audit_block b WHERE b.era OPERATOR(pg_catalog.=) $1",
									  1, t1, v1, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "crm audit block lookup failed");
			lo = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		}
		summarize_log_ranges();
		n += seal_range(era, lo, hi);
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	return n;
}

/* SQL function: crm.audit_seal() returns bigint */
PG_FUNCTION_INFO_V1(crm_audit_seal);
Datum
crm_audit_seal(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(crm_audit_seal_internal());
}

typedef struct VerifyState
{
	uint8		h[32];
	ArrayType  *ids;
	int64	   *idv;
	int			nids;
	const uint8 *chain;
	int			pos;
	int64		block_no;
	bool		broken;
	int64		broken_id;
	char	   *problem;
	int64		entries;
} VerifyState;

static bool
verify_cb(void *arg, int64 id, const uint8 *e)
{
	VerifyState *v = arg;

	v->entries++;
	if (v->pos >= v->nids)
	{
		v->broken = true;
		v->broken_id = id;
		v->problem = psprintf("entry %lld was inserted: block %lld does not hold it", (long long) id, (long long) v->block_no);
		return false;
	}
	if (v->idv[v->pos] != id)
	{
		v->broken = true;
		if (v->idv[v->pos] < id)
		{
			v->broken_id = v->idv[v->pos];
			v->problem = psprintf("entry %lld of block %lld is missing (deleted or moved out of the block)",
								  (long long) v->idv[v->pos], (long long) v->block_no);
		}
		else
		{
			v->broken_id = id;
			v->problem = psprintf("entry %lld was inserted: block %lld does not hold it", (long long) id, (long long) v->block_no);
		}
		return false;
	}
	chain_step(v->h, e, v->h);
	if (memcmp(v->h, v->chain + 32 * v->pos, 32) != 0)
	{
		v->broken = true;
		v->broken_id = id;
		v->problem = psprintf("entry %lld (block %lld) was altered: its hash does not match the chain",
							  (long long) id, (long long) v->block_no);
		return false;
	}
	v->pos++;
	return true;
}

/*
 * Verify the blocks with block_no in [first, last] (0: from the first; -1: to the last), or those
 * sealed in [from, to). Fills the result row.
 */
static void
verify_blocks(const char *where, int nargs, Oid *types, Datum *vals, bool *ok, int64 *blocks, int64 *entries,
			  int64 *first_broken, char **problem, int64 *upto_block, uint8 *upto_hash)
{
	SPIPlanPtr	plan;
	Portal		portal;
	uint8		prev[32];
	bool		have_prev = false;
	int64		prev_no = 0;

	*ok = true;
	*blocks = 0;
	*entries = 0;
	*first_broken = 0;
	*problem = NULL;
	plan = SPI_prepare(psprintf("SELECT b.block_no, b.era, b.lo_xid::pg_catalog.text, b.hi_xid::pg_catalog.text, b.entries, b.ids, b.chain, b.prev_hash, b.block_hash"
								" FROM crm.audit_block b %s ORDER BY b.block_no", where), nargs, types);
	if (plan == NULL)
		elog(ERROR, "crm audit verify could not be prepared");
	portal = SPI_cursor_open(NULL, plan, vals, NULL, true);
	for (;;)
	{
		SPITupleTable *tt;

		SPI_cursor_fetch(portal, true, 1);
		if (SPI_processed == 0)
			break;
		tt = SPI_tuptable;
		{
			HeapTuple	t = tt->vals[0];
			TupleDesc	d = tt->tupdesc;
			bool		isnull;
			int64		no = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
			int64		era = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
			char	   *lo = SPI_getvalue(t, d, 3);
			char	   *hi = SPI_getvalue(t, d, 4);
			int32		n = DatumGetInt32(SPI_getbinval(t, d, 5, &isnull));
			ArrayType  *ids = DatumGetArrayTypePCopy(SPI_getbinval(t, d, 6, &isnull));
			bytea	   *chain = DatumGetByteaPCopy(SPI_getbinval(t, d, 7, &isnull));
			bytea	   *ph = DatumGetByteaPCopy(SPI_getbinval(t, d, 8, &isnull));
			bytea	   *bh = DatumGetByteaPCopy(SPI_getbinval(t, d, 9, &isnull));
			uint8		calc[32];
			VerifyState vs;
			Datum	   *idd;
			int			nidd;

			(*blocks)++;
			if (have_prev && (no != prev_no + 1 || memcmp(VARDATA(ph), prev, 32) != 0))
			{
				*ok = false;
				*problem = no != prev_no + 1 ? psprintf("block %lld is missing", (long long) (prev_no + 1))
					: psprintf("block %lld does not link to block %lld", (long long) no, (long long) prev_no);
				break;
			}
			if (VARSIZE_ANY_EXHDR(chain) != 32 * (Size) n || ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids)) != n || n <= 0 ||
				VARSIZE_ANY_EXHDR(ph) != 32 || VARSIZE_ANY_EXHDR(bh) != 32)
			{
				*ok = false;
				*problem = psprintf("block %lld is malformed", (long long) no);
				break;
			}
			block_hash((uint8 *) VARDATA(ph), no, era, lo, hi, n, (uint8 *) VARDATA(chain) + 32 * (n - 1), calc);
			if (memcmp(calc, VARDATA(bh), 32) != 0)
			{
				*ok = false;
				*problem = psprintf("block %lld was altered: its hash does not match its contents", (long long) no);
				break;
			}
			deconstruct_array(ids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &idd, NULL, &nidd);
			memset(&vs, 0, sizeof(vs));
			memcpy(vs.h, VARDATA(ph), 32);
			vs.idv = palloc(sizeof(int64) * Max(nidd, 1));
			for (int i = 0; i < nidd; i++)
				vs.idv[i] = DatumGetInt64(idd[i]);
			vs.nids = nidd;
			vs.chain = (uint8 *) VARDATA(chain);
			vs.block_no = no;
			walk_entries(era, lo, hi, verify_cb, &vs, false);
			*entries += vs.entries;
			if (!vs.broken && vs.pos < vs.nids)
			{
				vs.broken = true;
				vs.broken_id = vs.idv[vs.pos];
				vs.problem = psprintf("entry %lld of block %lld is missing (deleted or moved out of the block)",
									  (long long) vs.idv[vs.pos], (long long) no);
			}
			if (vs.broken)
			{
				*ok = false;
				*first_broken = vs.broken_id;
				*problem = vs.problem;
				break;
			}
			memcpy(prev, VARDATA(bh), 32);
			have_prev = true;
			prev_no = no;
			if (upto_block)
			{
				*upto_block = no;
				memcpy(upto_hash, VARDATA(bh), 32);
			}
		}
		SPI_freetuptable(tt);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

static int64
count_unsealed(void)
{
	bool		isnull;

	if (SPI_execute("SELECT pg_catalog.count(*) FROM crm.audit_log l WHERE l.era OPERATOR(pg_catalog.=) crm._audit_era()"
					" AND l.xid OPERATOR(pg_catalog.>=) COALESCE((SELECT pg_catalog.max(b.hi_xid) FROM crm.audit_block b"
					" WHERE b.era OPERATOR(pg_catalog.=) crm._audit_era()), 0::pg_catalog.int8)", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "crm audit count failed");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Entries no block can cover: of another era than this one, and beyond what the chain sealed of
 * that era (or of an era the chain never knew). Entries inside sealed ranges are checked block by
 * block; this era's newest entries are merely unsealed.
 */
static int64
orphan_entry(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("WITH e AS (SELECT b.era, pg_catalog.max(b.hi_xid) AS hi FROM crm.audit_block b GROUP BY b.era)"
					" SELECT pg_catalog.min(l.id) FROM crm.audit_log l LEFT JOIN e ON e.era OPERATOR(pg_catalog.=) l.era"
					" WHERE l.era OPERATOR(pg_catalog.<>) crm._audit_era() AND (e.era IS NULL OR l.xid OPERATOR(pg_catalog.>=) e.hi)",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "crm audit orphan check failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(d);
}

static Datum
verify_result(FunctionCallInfo fcinfo, bool ok, int64 blocks, int64 entries, int64 unsealed, int64 broken, const char *problem)
{
	TupleDesc	desc;
	Datum		v[6];
	bool		n[6] = {false, false, false, false, broken == 0, problem == NULL};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	v[0] = BoolGetDatum(ok);
	v[1] = Int64GetDatum(blocks);
	v[2] = Int64GetDatum(entries);
	v[3] = Int64GetDatum(unsealed);
	v[4] = Int64GetDatum(broken);
	v[5] = problem ? CStringGetTextDatum(problem) : (Datum) 0;
	return HeapTupleGetDatum(heap_form_tuple(desc, v, n));
}

typedef struct VerifyOut
{
	bool		ok;
	int64		blocks;
	int64		entries;
	int64		broken;
	int64		unsealed;
	char	   *problem;
	int64		upto;
	uint8		upto_hash[32];
} VerifyOut;

/* SQL function: crm.audit_verify(from timestamptz, to timestamptz) */
PG_FUNCTION_INFO_V1(crm_audit_verify);
Datum
crm_audit_verify(PG_FUNCTION_ARGS)
{
	CrmUserSwitch sw;
	VerifyOut  *vo = palloc0(sizeof(VerifyOut));
	MemoryContext cxt = CurrentMemoryContext;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};
		Datum		vals[2] = {PG_ARGISNULL(0) ? TimestampTzGetDatum(DT_NOBEGIN) : PG_GETARG_DATUM(0),
		PG_ARGISNULL(1) ? TimestampTzGetDatum(DT_NOEND) : PG_GETARG_DATUM(1)};

		SPI_connect();
		verify_blocks("WHERE b.sealed_at OPERATOR(pg_catalog.>=) $1 AND b.sealed_at OPERATOR(pg_catalog.<) $2",
					  2, types, vals, &vo->ok, &vo->blocks, &vo->entries, &vo->broken, &vo->problem, NULL, NULL);
		if (vo->ok && PG_ARGISNULL(0) && PG_ARGISNULL(1))
		{
			int64		orphan = orphan_entry();

			if (orphan != 0)
			{
				vo->ok = false;
				vo->broken = orphan;
				vo->problem = psprintf("entry %lld was inserted: no block of its era can hold it", (long long) orphan);
			}
		}
		vo->unsealed = count_unsealed();
		if (vo->problem)
			vo->problem = MemoryContextStrdup(cxt, vo->problem);
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(verify_result(fcinfo, vo->ok, vo->blocks, vo->entries, vo->unsealed, vo->broken, vo->problem));
}

/*
 * The signature of a digest: under master key key_id (NULL: the current one, named in *used_id),
 * or, for a digest of 0.1 (no key named), under the legacy audit key.
 */
static void
digest_signature(const char *key_id, bool legacy, int64 block, const char *hash_hex, const char *sealed_at,
				 StringInfo out, const char **used_id)
{
	CrmHmacKey	k;
	const char *id = key_id;
	char	   *msg;

	crm_audit_digest_key(key_id, legacy, &k, &id);
	if (legacy)
		msg = psprintf("crm-audit-digest|%lld|%s|%s", (long long) block, hash_hex, sealed_at);
	else
		msg = psprintf("crm-audit-digest|v2|%s|%lld|%s|%s", id, (long long) block, hash_hex, sealed_at);
	keyed_hash(&k, "digest", "v1", msg, strlen(msg), out);
	explicit_bzero(&k, sizeof(k));
	if (used_id)
		*used_id = id;
}

/* SQL function: crm.audit_digest() returns jsonb */
PG_FUNCTION_INFO_V1(crm_audit_digest);
Datum
crm_audit_digest(PG_FUNCTION_ARGS)
{
	CrmUserSwitch sw;
	StringInfoData js;

	(void) crm_audit_seal_internal();
	initStringInfo(&js);
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute("SELECT b.block_no, b.block_hash, pg_catalog.to_char(b.sealed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
						" b.last_id, (SELECT pg_catalog.sum(x.entries) FROM crm.audit_block x)"
						" FROM crm.audit_block b ORDER BY b.block_no DESC LIMIT 1", true, 1) != SPI_OK_SELECT)
			elog(ERROR, "crm audit digest failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("the audit log has no sealed block yet")));
		{
			HeapTuple	t = SPI_tuptable->vals[0];
			TupleDesc	d = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		no = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
			bytea	   *bh = DatumGetByteaPP(SPI_getbinval(t, d, 2, &isnull));
			char	   *at = SPI_getvalue(t, d, 3);
			StringInfoData h, sig;
			const char *kid;

			initStringInfo(&h);
			hex((uint8 *) VARDATA_ANY(bh), 32, &h);
			initStringInfo(&sig);
			digest_signature(NULL, false, no, h.data, at, &sig, &kid);
			/* (key ids are letters, digits, _ - . : nothing to escape) */
			appendStringInfo(&js, "{\"block\": %lld, \"hash\": \"%s\", \"sealed_at\": \"%s\", \"last_id\": %s, \"entries\": %s, \"key\": \"%s\", \"signature\": \"%s\"}",
							 (long long) no, h.data, at, SPI_getvalue(t, d, 4), SPI_getvalue(t, d, 5), kid, sig.data);
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(js.data)));
}

/* SQL function: crm.audit_verify(digest jsonb) */
PG_FUNCTION_INFO_V1(crm_audit_verify_digest);
Datum
crm_audit_verify_digest(PG_FUNCTION_ARGS)
{
	Jsonb	   *dg = (crm_require_arg(fcinfo, 0, "crm.audit_verify", "digest"), PG_GETARG_JSONB_P(0));
	CrmUserSwitch sw;
	VerifyOut  *vo = palloc0(sizeof(VerifyOut));
	MemoryContext cxt = CurrentMemoryContext;
	int64		want_block;
	char	   *want_hash, *at, *sig;
	Datum		d = PointerGetDatum(dg);
	Datum		parts[5];
	const char *keys[5] = {"block", "hash", "sealed_at", "signature", "key"};
	char	   *key_id = NULL;

	for (int i = 0; i < 5; i++)
	{
		LOCAL_FCINFO(f, 2);

		InitFunctionCallInfoData(*f, NULL, 2, InvalidOid, NULL, NULL);
		f->args[0].value = d;
		f->args[0].isnull = false;
		f->args[1].value = CStringGetTextDatum(keys[i]);
		f->args[1].isnull = false;
		parts[i] = jsonb_object_field_text(f);
		if (f->isnull && i == 4)
			break;				/* no key named: a digest of 0.1, signed with the legacy key */
		if (i == 4)
			key_id = TextDatumGetCString(parts[4]);
		if (f->isnull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a digest needs \"%s\"", crm_short(keys[i])),
					 errhint("Pass what crm.audit_digest() returned.")));
	}
	want_block = pg_strtoint64(TextDatumGetCString(parts[0]));
	want_hash = TextDatumGetCString(parts[1]);
	at = TextDatumGetCString(parts[2]);
	sig = TextDatumGetCString(parts[3]);
	{
		StringInfoData expect;

		initStringInfo(&expect);
		digest_signature(key_id, key_id == NULL, want_block, want_hash, at, &expect, NULL);
		if (strcmp(expect.data, sig) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the digest's signature does not match"),
					 errdetail("It was not made by crm.audit_digest() in this database, or it was edited.")));
	}
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[1] = {INT8OID};
		Datum		vals[1] = {Int64GetDatum(want_block)};

		SPI_connect();
		verify_blocks("WHERE b.block_no OPERATOR(pg_catalog.<=) $1", 1, types, vals, &vo->ok, &vo->blocks, &vo->entries,
					  &vo->broken, &vo->problem, &vo->upto, vo->upto_hash);
		if (vo->ok)
		{
			StringInfoData h;

			initStringInfo(&h);
			if (vo->upto == want_block)
				hex(vo->upto_hash, 32, &h);
			if (vo->upto != want_block || strcmp(h.data, want_hash) != 0)
			{
				vo->ok = false;
				vo->problem = vo->upto != want_block
					? psprintf("block %lld of the digest is not in the log", (long long) want_block)
					: psprintf("the log no longer extends the digest: block %lld's hash differs (the log was rewritten)",
							   (long long) want_block);
			}
		}
		vo->unsealed = count_unsealed();
		if (vo->problem)
			vo->problem = MemoryContextStrdup(cxt, vo->problem);
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(verify_result(fcinfo, vo->ok, vo->blocks, vo->entries, vo->unsealed, vo->broken, vo->problem));
}

/* --- the utility guard: the log stays append-only, crm's triggers stay on ------------------------- */

static bool
is_audit_rel(Oid relid)
{
	Oid			nsp = get_namespace_oid("crm", true);
	const char *name;

	if (!OidIsValid(relid) || !OidIsValid(nsp) || get_rel_namespace(relid) != nsp)
		return false;
	name = get_rel_name(relid);
	return name != NULL && (strcmp(name, "audit_block") == 0 || strncmp(name, "audit_log", 9) == 0) &&
		get_rel_relkind(relid) != RELKIND_SEQUENCE && get_rel_relkind(relid) != RELKIND_INDEX &&
		get_rel_relkind(relid) != RELKIND_PARTITIONED_INDEX;
}

static bool
is_managed_rel(Oid relid)
{
	Oid			nsp = get_namespace_oid("crm_data", true);

	return OidIsValid(relid) && OidIsValid(nsp) && get_rel_namespace(relid) == nsp &&
		get_rel_relkind(relid) == RELKIND_RELATION;
}

static Oid
rv_relid(RangeVar *rv)
{
	return rv ? RangeVarGetRelid(rv, NoLock, true) : InvalidOid;
}

static void
refuse(const char *what, const char *rel, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s %s is not allowed", crm_short(what), crm_short(rel)),
			 errdetail("crm keeps its audit trail complete: the log is append-only and crm's triggers stay enabled, for table owners and superusers too."),
			 hint ? errhint("%s", hint) : 0));
}

/* An empty log (being installed or restored) has nothing to hide. */
static bool
audit_log_empty(void)
{
	Datum		out[1];
	bool		nulls[1];
	Oid			nsp = get_namespace_oid("crm", true);

	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("audit_log", nsp)))
		return true;
	return !crm_query_row_as_owner("SELECT 1 FROM crm.audit_log LIMIT 1", 0, NULL, NULL, out, nulls, 1);
}

/* the function each of crm's triggers must call */
static const char *
crm_trigger_function(const char *trigger)
{
	static const char *const map[][2] = {
		{"crm_stamp", "stamp"}, {"crm_write_guard", "guard"}, {"crm_cascade", "_cascade_owner"},
		{"crm_audit", "_audit_row"}, {"crm_audit_flush", "_audit_flush"}, {"crm_append_only", "_audit_append_only"},
		{"crm_append_only_truncate", "_audit_append_only"}, {"crm_acl_changed", "_acl_changed"}
	};

	for (int i = 0; i < (int) lengthof(map); i++)
		if (strcmp(map[i][0], trigger) == 0)
			return map[i][1];
	return NULL;
}

/* Does a function reference name a function in schema crm? */
static bool
crm_function_object(Node *obj)
{
	Oid			nsp = get_namespace_oid("crm", true);
	Oid			fn;

	if (obj == NULL || !OidIsValid(nsp))
		return false;
	if (IsA(obj, ObjectWithArgs))
	{
		ObjectWithArgs *owa = (ObjectWithArgs *) obj;
		char	   *schema, *name;

		fn = LookupFuncWithArgs(OBJECT_ROUTINE, owa, true);
		if (OidIsValid(fn))
			return get_func_namespace(fn) == nsp;
		DeconstructQualifiedName(owa->objname, &schema, &name);
		return schema != NULL && strcmp(schema, "crm") == 0;
	}
	return false;
}

static Oid
audit_log_owner(Oid log)
{
	HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(log));
	Oid			owner = InvalidOid;

	if (HeapTupleIsValid(tp))
	{
		owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
		ReleaseSysCache(tp);
	}
	return owner;
}

/* The shape each of crm's triggers on managed tables must keep when it is replaced. */
static bool
canonical_trigger(CreateTrigStmt *t)
{
	int			iud = TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE;

	if (strcmp(t->trigname, "crm_cascade") == 0)
		return t->row && t->timing == 0 && t->events == TRIGGER_TYPE_UPDATE;
	if (t->columns != NIL || t->whenClause != NULL || t->transitionRels != NIL)
		return false;
	if (strcmp(t->trigname, "crm_audit") == 0)
		return t->row && t->timing == 0 && t->events == iud;
	if (strcmp(t->trigname, "crm_audit_flush") == 0)
		return !t->row && t->timing == 0 && t->events == (iud | TRIGGER_TYPE_TRUNCATE);
	if (strcmp(t->trigname, "crm_stamp") == 0 || strcmp(t->trigname, "crm_write_guard") == 0)
		return t->row && t->timing == TRIGGER_TYPE_BEFORE && t->events == (TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE);
	return false;
}

/* Dropping the log or its chain by any path (a cascade, DROP OWNED ...) */
static object_access_hook_type prev_object_access = NULL;

static void
crm_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access)
		prev_object_access(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == RelationRelationId && subId == 0 && !creating_extension &&
		!crm_audit_internal_ddl && IsTransactionState() && is_audit_rel(objectId))
		refuse("dropping", get_rel_name(objectId), "Old months leave through crm.audit_retention().");
	/* no silent copies into large objects (copywrite.c) */
	if (access == OAT_POST_CREATE && classId == LargeObjectRelationId)
		crm_copies_check_large_object();
}

void
crm_audit_hooks_init(void)
{
	prev_object_access = object_access_hook;
	object_access_hook = crm_object_access;
}

/* Refuse what would weaken the audit trail; called by the ProcessUtility hook before running it. */
void
crm_audit_check_utility(Node *stmt)
{
	if (creating_extension || crm_audit_internal_ddl)
		return;
	switch (nodeTag(stmt))
	{
		case T_AlterTableStmt:
			{
				AlterTableStmt *a = (AlterTableStmt *) stmt;
				Oid			relid = rv_relid(a->relation);
				ListCell   *lc;

				if (is_audit_rel(relid) && !audit_log_empty())
				{
					foreach(lc, a->cmds)
					{
						AlterTableCmd *c = lfirst(lc);

						/* what installing and restoring do; none of it can hide an entry */
						/* what a restore does after the rows are in; a CHECK could make entries fail */
						bool		key = (c->subtype == AT_AddConstraint && c->def && IsA(c->def, Constraint) &&
										   (((Constraint *) c->def)->contype == CONSTR_PRIMARY ||
											((Constraint *) c->def)->contype == CONSTR_UNIQUE)) ||
							c->subtype == AT_AddIndexConstraint;

						if (c->subtype != AT_EnableAlwaysTrig && c->subtype != AT_AddIndex && !key)
							refuse("ALTER TABLE of", get_rel_name(relid), "Old months leave through crm.audit_retention().");
					}
				}
				else if (is_managed_rel(relid))
					foreach(lc, a->cmds)
					{
						AlterTableCmd *c = lfirst(lc);

						switch (c->subtype)
						{
							case AT_DisableTrig:
							case AT_EnableTrig:
							case AT_EnableReplicaTrig:
								if (c->name && strncmp(c->name, "crm_", 4) == 0)
									refuse(c->subtype == AT_DisableTrig ? "disabling trigger" : "changing when this trigger fires:",
										   c->name, "crm's triggers fire ALWAYS, whatever session_replication_role says.");
								break;
							case AT_DisableTrigAll:
							case AT_DisableTrigUser:
							case AT_EnableTrigAll:
							case AT_EnableTrigUser:
								refuse("ALTER TABLE ... ENABLE/DISABLE TRIGGER ALL/USER on", get_rel_name(relid),
									   "Name the trigger; crm's own triggers (crm_*) cannot be disabled.");
								break;
							case AT_DisableRowSecurity:
							case AT_NoForceRowSecurity:
								refuse("turning row security off for", get_rel_name(relid), NULL);
								break;
							default:
								break;
						}
					}
				break;
			}
		case T_DropStmt:
			{
				DropStmt   *d = (DropStmt *) stmt;
				ListCell   *lc;

				if (d->removeType == OBJECT_TABLE)
					foreach(lc, d->objects)
					{
						Oid			relid = rv_relid(makeRangeVarFromNameList((List *) lfirst(lc)));

						if (is_audit_rel(relid))
							refuse("DROP TABLE", get_rel_name(relid), "Old months leave through crm.audit_retention().");
						if (is_managed_rel(relid) && IsTransactionState() && !InLocalUserIdChange())
							crm_audit_event("DDL", get_rel_name(relid), 0, "{\"statement\": \"DROP TABLE\"}");
					}
				else if (d->removeType == OBJECT_TRIGGER)
					foreach(lc, d->objects)
					{
						List	   *names = (List *) lfirst(lc);
						char	   *trig = strVal(llast(names));
						Oid			relid = rv_relid(makeRangeVarFromNameList(list_truncate(list_copy(names), list_length(names) - 1)));

						if (strncmp(trig, "crm_", 4) == 0 && (is_managed_rel(relid) || is_audit_rel(relid)))
							refuse("DROP TRIGGER", trig, NULL);
					}
				else if (d->removeType == OBJECT_FUNCTION || d->removeType == OBJECT_PROCEDURE || d->removeType == OBJECT_ROUTINE)
					foreach(lc, d->objects)
					{
						if (crm_function_object((Node *) lfirst(lc)))
							refuse("DROP FUNCTION of", "a crm function", "crm's functions go only with DROP EXTENSION crm.");
					}
				else if (d->removeType == OBJECT_SCHEMA)
					foreach(lc, d->objects)
					{
						Oid			nsp = get_namespace_oid("crm", true);

						if (OidIsValid(nsp) && strcmp(strVal(lfirst(lc)), "crm") == 0 &&
							OidIsValid(get_relname_relid("audit_log", nsp)))
							refuse("DROP SCHEMA", "crm", "It holds the audit log.");
					}
				break;
			}
		case T_TruncateStmt:
			{
				ListCell   *lc;

				foreach(lc, ((TruncateStmt *) stmt)->relations)
				{
					Oid			relid = rv_relid((RangeVar *) lfirst(lc));

					/* an empty one loses nothing: a parallel restore truncates what it just made */
					if (is_audit_rel(relid) && !crm_audit_rel_is_empty(relid))
						refuse("TRUNCATE", get_rel_name(relid), NULL);
				}
				break;
			}
		case T_CreateTrigStmt:
			{
				CreateTrigStmt *t = (CreateTrigStmt *) stmt;
				Oid			relid = rv_relid(t->relation);
				const char *want = crm_trigger_function(t->trigname);

				if (is_audit_rel(relid) && !audit_log_empty() &&
					!(strncmp(t->trigname, "crm_append_only", 15) == 0 && want != NULL &&
					  strcmp(strVal(llast(t->funcname)), want) == 0 && t->timing == TRIGGER_TYPE_BEFORE))
					refuse("CREATE TRIGGER on", get_rel_name(relid), "A trigger on the log could drop or change entries.");
				if (t->replace && strncmp(t->trigname, "crm_", 4) == 0 && is_managed_rel(relid) &&
					(want == NULL || strcmp(strVal(llast(t->funcname)), want) != 0 || !canonical_trigger(t)))
					refuse("replacing trigger", t->trigname, NULL);
				break;
			}
		case T_RenameStmt:
			{
				RenameStmt *r = (RenameStmt *) stmt;
				Oid			relid = rv_relid(r->relation);

				if (is_audit_rel(relid) ||
					(r->renameType == OBJECT_TRIGGER && r->subname && strncmp(r->subname, "crm_", 4) == 0 && is_managed_rel(relid)))
					refuse("renaming", r->subname ? r->subname : get_rel_name(relid), NULL);
				if (r->renameType == OBJECT_SCHEMA && r->subname &&
					(strcmp(r->subname, "crm") == 0 || strcmp(r->subname, "crm_data") == 0))
					refuse("renaming schema", r->subname, NULL);
				if ((r->renameType == OBJECT_FUNCTION || r->renameType == OBJECT_PROCEDURE || r->renameType == OBJECT_ROUTINE) &&
					crm_function_object(r->object))
					refuse("renaming a function of", "crm", NULL);
				break;
			}
		case T_RuleStmt:
			{
				Oid			relid = rv_relid(((RuleStmt *) stmt)->relation);

				if (is_audit_rel(relid) || is_managed_rel(relid))
					refuse("CREATE RULE on", get_rel_name(relid), "Rules would rewrite what crm audits and protects.");
				break;
			}
		case T_CreateFunctionStmt:
			{
				CreateFunctionStmt *f = (CreateFunctionStmt *) stmt;
				char	   *fname;

				if (QualifiedNameGetCreationNamespace(f->funcname, &fname) == get_namespace_oid("crm", true))
					refuse("creating or replacing function", psprintf("crm.%s", fname), "crm's functions change only with the extension (ALTER EXTENSION crm UPDATE).");
				break;
			}
		case T_AlterFunctionStmt:
			if (crm_function_object((Node *) ((AlterFunctionStmt *) stmt)->func))
				refuse("ALTER FUNCTION of", "a crm function", NULL);
			break;
		case T_AlterExtensionContentsStmt:
			if (strcmp(((AlterExtensionContentsStmt *) stmt)->extname, "crm") == 0)
				refuse("changing the members of extension", "crm", NULL);
			break;
		case T_AlterObjectDependsStmt:
			{
				AlterObjectDependsStmt *d = (AlterObjectDependsStmt *) stmt;

				if ((d->objectType == OBJECT_TRIGGER && d->object && IsA(d->object, List) &&
					 strncmp(strVal(llast((List *) d->object)), "crm_", 4) == 0) ||
					((d->objectType == OBJECT_FUNCTION || d->objectType == OBJECT_PROCEDURE) && crm_function_object(d->object)))
					refuse("ALTER ... DEPENDS ON EXTENSION for", "crm's objects", NULL);
				break;
			}
		case T_AlterObjectSchemaStmt:
			{
				AlterObjectSchemaStmt *a = (AlterObjectSchemaStmt *) stmt;

				if (a->relation && is_audit_rel(rv_relid(a->relation)))
					refuse("ALTER ... SET SCHEMA of", get_rel_name(rv_relid(a->relation)), NULL);
				if ((a->objectType == OBJECT_FUNCTION || a->objectType == OBJECT_PROCEDURE) && crm_function_object(a->object))
					refuse("ALTER ... SET SCHEMA of", "a crm function", NULL);
				break;
			}
		case T_DropOwnedStmt:
		case T_ReassignOwnedStmt:
			{
				List	   *roles = IsA(stmt, DropOwnedStmt) ? ((DropOwnedStmt *) stmt)->roles : ((ReassignOwnedStmt *) stmt)->roles;
				Oid			nsp = get_namespace_oid("crm", true);
				Oid			log = OidIsValid(nsp) ? get_relname_relid("audit_log", nsp) : InvalidOid;
				ListCell   *lc;

				if (OidIsValid(log))
					foreach(lc, roles)
						if (get_rolespec_oid((RoleSpec *) lfirst(lc), true) == audit_log_owner(log))
							refuse(IsA(stmt, DropOwnedStmt) ? "DROP OWNED BY" : "REASSIGN OWNED BY", "the owner of the audit log", NULL);
				break;
			}
		default:
			break;
	}
}

/* After a utility statement ran: DDL on managed tables and changes of crm's settings are events. */
void
crm_audit_after_utility(Node *stmt, const char *query, bool toplevel)
{
	Oid			relid = InvalidOid;
	const char *action = "DDL";

	if (!IsTransactionState() || creating_extension || crm_internal_depth > 0)
		return;
	/* DDL run by crm's own (SECURITY DEFINER) functions is recorded as the catalog change behind it */
	if (!toplevel && InLocalUserIdChange() && !IsA(stmt, VariableSetStmt) && !IsA(stmt, AlterSystemStmt))
		return;
	/* a replaced crm trigger fires ALWAYS again, whoever replaced it */
	if (IsA(stmt, CreateTrigStmt) && ((CreateTrigStmt *) stmt)->replace &&
		strncmp(((CreateTrigStmt *) stmt)->trigname, "crm_", 4) == 0 &&
		is_managed_rel(rv_relid(((CreateTrigStmt *) stmt)->relation)))
	{
		CreateTrigStmt *t = (CreateTrigStmt *) stmt;
		Oid			relid = rv_relid(t->relation);

		SPI_connect();
		SPI_execute(psprintf("ALTER TABLE crm_data.%s ENABLE ALWAYS TRIGGER %s",
							 quote_identifier(get_rel_name(relid)), quote_identifier(t->trigname)), false, 0);
		SPI_finish();
	}
	switch (nodeTag(stmt))
	{
		case T_AlterTableStmt:
			relid = rv_relid(((AlterTableStmt *) stmt)->relation);
			break;
		case T_CreateTrigStmt:
			relid = rv_relid(((CreateTrigStmt *) stmt)->relation);
			break;
		case T_CreatePolicyStmt:
			relid = rv_relid(((CreatePolicyStmt *) stmt)->table);
			break;
		case T_AlterPolicyStmt:
			relid = rv_relid(((AlterPolicyStmt *) stmt)->table);
			break;
		case T_GrantStmt:
			{
				GrantStmt  *g = (GrantStmt *) stmt;

				if (g->objtype == OBJECT_TABLE && g->targtype == ACL_TARGET_OBJECT && g->objects != NIL)
					relid = rv_relid((RangeVar *) linitial(g->objects));
				action = "GRANT";
				break;
			}
		case T_VariableSetStmt:
		case T_AlterSystemStmt:
			{
				VariableSetStmt *v = IsA(stmt, AlterSystemStmt) ? ((AlterSystemStmt *) stmt)->setstmt : (VariableSetStmt *) stmt;

				if (v->name && strncmp(v->name, "crm.", 4) == 0)
				{
					StringInfoData d;

					initStringInfo(&d);
					appendStringInfoString(&d, "{\"operation\": \"setting\", \"statement\": ");
					escape_json(&d, query ? pnstrdup(query, 1000) : "");
					appendStringInfoChar(&d, '}');
					crm_auditq_session_event("MAINTENANCE", NULL, 0, crm_last_principal, d.data);
				}
				return;
			}
		default:
			return;
	}
	if (!is_managed_rel(relid))
		return;
	{
		StringInfoData d;

		initStringInfo(&d);
		appendStringInfoString(&d, "{\"statement\": ");
		escape_json(&d, query ? pnstrdup(query, 2000) : "");
		appendStringInfoChar(&d, '}');
		crm_audit_event(action, get_rel_name(relid), 0, d.data);
	}
}
