/*
 * auditq_int.h: what auditq.c (producers), auditwal.c (the audit worker: WAL reader and dispatcher)
 * and auditwriter.c (one writer per database) share about events that outlive their transaction.
 *
 * The path of an event: a backend writes it to WAL as a record of crm's resource manager (flushed
 * before the statement returns when synchronous_commit is on: as durable as a commit). The audit
 * worker reads WAL from where its replication slot "crm_audit" holds it, and puts each event in a
 * slot of shared memory for its database; that database's writer inserts its events into
 * crm.audit_log in batches and records, in the same transaction, the WAL position it has written up
 * to (crm._audit_intake). The slot only moves past events that are written, so neither a crash nor a
 * writer that fails loses one, and the position makes a replay after a crash write nothing twice.
 */
#ifndef CRM_AUDITQ_INT_H
#define CRM_AUDITQ_INT_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

#define CRM_RMGR_ID			171		/* crm's WAL resource manager (see docs/audit.md) */
#define CRM_XLOG_EVENT		0x00	/* 0.1: the database by name only */
#define CRM_XLOG_EVENT_DB	0x10	/* the database's OID too (events are routed by it) */
#define CRM_SLOT_NAME		"crm_audit"

#define AQ_SLOTS			2048	/* events read from WAL, waiting for their database's writer */
#define AQ_RING				64		/* events of processes that cannot write WAL (no PGPROC yet) */
#define AQ_MAXDB			128		/* databases with events in flight (idle entries are reused) */
#define AQ_DB_CAP			(AQ_SLOTS / 4)	/* most slots one database may hold */
#define AQ_DB_MIN			8		/* ... and what each may hold when slots run short */
#define AQ_RESERVE			(AQ_SLOTS / 4)	/* slots run short: fewer than this free */
#define AQ_DETAIL_LEN		CRM_AUDIT_DETAIL_LEN

typedef struct QEvent
{
	TimestampTz at;
	int64		principal;
	int64		record_id;
	Oid			dbid;			/* the database it happened in (InvalidOid: not known, see db) */
	char		db[NAMEDATALEN];	/* the name the client gave; "" and no dbid: every crm database */
	char		session_user[NAMEDATALEN];
	char		current_user[NAMEDATALEN];
	char		client_addr[64];
	char		app[64];
	char		action[24];
	char		object[NAMEDATALEN];
	char		detail[AQ_DETAIL_LEN];
} QEvent;

typedef enum
{
	AQ_FREE = 0,
	AQ_QUEUED,					/* waiting for its writer */
	AQ_TAKEN					/* being written */
} AqSlotState;

typedef struct AqSlot
{
	int8		state;
	int16		db;				/* index into dbs */
	XLogRecPtr	lsn;			/* where the event's record starts */
	QEvent		ev;
} AqSlot;

typedef enum
{
	AQ_DB_UNUSED = 0,
	AQ_DB_UNKNOWN,				/* not yet probed */
	AQ_DB_CRM,					/* has crm's audit log */
	AQ_DB_NOCRM					/* has none (its events are not crm's) until recheck_at */
} AqDbState;

typedef struct AqDb
{
	Oid			dbid;			/* the key: events are routed by database OID (a rename keeps it) */
	char		name[NAMEDATALEN];	/* its name when last looked at (messages) */
	int8		state;
	bool		dirty;			/* has entries to seal */
	bool		failing;		/* its writer's last run failed (it retries) */
	int			queued;			/* slots QUEUED or TAKEN for it */
	TimestampTz recheck_at;
	TimestampTz paused_until;	/* its writer leaves and stays away (DROP DATABASE and the like) */
	uint32		attach_gen;		/* crm installed here (crm._audit_attach() committed) this often */
	XLogRecPtr	handed_upto;	/* (audit worker) its events up to here were queued */
	XLogRecPtr	held_from;		/* (audit worker) its events from here on are left in WAL for now */
	Latch	   *writer_latch;
	int			writer_pid;		/* its writer (0: none): never two at once */
} AqDb;

typedef struct AuditQ
{
	LWLock	   *lock;			/* slots and dbs */
	Latch	   *worker_latch;	/* the audit worker's */
	pg_atomic_uint64 lost;		/* events that could not be written at all (counted, then recorded) */
	int			used;			/* slots not free */
	slock_t		ring_lock;		/* the ring: taken by processes without a PGPROC (no LWLock) */
	int			ring_head;
	int			ring_count;
	QEvent		ring[AQ_RING];
	AqDb		dbs[AQ_MAXDB];
	AqSlot		slots[AQ_SLOTS];
} AuditQ;

extern AuditQ *crm_aq;

/* auditq.c */
extern int	crm_aq_db_index(Oid dbid, bool add);
extern bool crm_aq_db_room(void);
extern bool crm_aq_wal_event(const QEvent *e);
extern bool crm_aq_decode(uint8 info, const char *data, uint32 len, QEvent *e);

/* auditwriter.c */
extern int	crm_audit_interval_ms;
extern char *crm_audit_writer_fault;

#endif
