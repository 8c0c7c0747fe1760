/*
 * crm.h: declarations shared by crm's C sources, split by the file that owns them.
 */
#ifndef CRM_H
#define CRM_H

#include "postgres.h"
#include "fmgr.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "utils/relcache.h"

/* crm.c: module state */
extern bool crm_is_preloaded;

/* crm.c: run fixed, schema-qualified SPI as the owner of crm's catalogs */
typedef struct CrmUserSwitch
{
	Oid			save_userid;
	int			save_sec_context;
	int			guc_nest;		/* the GUC nest level pinning search_path; 0: none */
} CrmUserSwitch;
#define CRM_SAFE_SEARCH_PATH "pg_catalog, crm, pg_temp"
extern int	crm_pin_search_path(const char *path);
extern void crm_unpin_search_path(int nest);
extern void crm_switch_to_role(CrmUserSwitch *sw, Oid role, int extra_sec);
extern Oid	crm_catalog_owner(void);
extern int	crm_internal_depth;
extern void crm_switch_to_owner(CrmUserSwitch *sw);
extern void crm_restore_user(CrmUserSwitch *sw);
extern void crm_watch_catalogs(void);
struct _SPI_plan;
extern struct _SPI_plan *crm_kept_plan(const char *sql, int nargs, Oid *argtypes);
extern bool crm_query_row_as_owner(const char *sql, int nargs, Oid *argtypes, Datum *values,
								   Datum *out, bool *outnull, int nout);

/* expr.c: conditions admins write over a record (walls, rules, workflow guards) */
typedef struct CrmFnCheck
{
	Oid			bad;			/* the first function or type found wanting */
	bool		untrusted;		/* neither built in nor crm's (else: volatile) */
	bool		is_type;		/* bad is a type (a domain or a type of another schema) */
	const char *why;			/* what is wrong with it, for messages */
	Oid			is_operator;	/* bad is the function of this operator, from another schema */
} CrmFnCheck;
extern bool crm_find_bad_function(Node *node, CrmFnCheck *fc);
extern char *crm_bad_function_text(CrmFnCheck *fc);
extern char *crm_condition_sql(const char *object, const char *cond);

/* cache.c: what the per-backend caches share (retired memory, column checks, metadata snapshots) */
extern uint64 crm_cache_generation;	/* bumped by every reset of crm's caches */
extern MemoryContext crm_cache_context(MemoryContext *cxt, const char *name);
extern void crm_cache_retire(MemoryContext *cxt);
extern void crm_cache_free_retired(void);
extern void crm_cache_watch_rel(Oid relid);
extern bool crm_cache_rel_watched(Oid relid);
extern void crm_cache_unwatch_rels(void);
extern int	crm_attnum(TupleDesc desc, const char *name);
extern bool crm_attnum_valid(TupleDesc desc, int attnum, const char *name, Oid typid);
extern int	crm_std_attnum(Relation rel, const char *name, Oid typid);
extern int	crm_spi_latest(struct _SPI_plan *plan, Datum *values);

/* acl.c: record-level access cache */
extern void crm_acl_reset(void);
extern bool crm_acl_reaches(int64 principal, const char *object, const char *priv, int64 owner, int64 unit);

/* stamp.c */
extern int64 crm_principal_unit(int64 principal);

/* restore.c: what lets every restore path load a dump */
extern bool crm_audit_rel_is_empty(Oid relid);
extern bool crm_audit_log_loaded(Oid relid);
extern bool crm_restore_copy_unchecked(Node *stmt);
extern bool crm_restore_fk_to_catalog(Node *stmt);
extern void crm_restore_skip_fk_check(Node *stmt);
extern void crm_restore_check_drop(Node *stmt);

/* masking.c: queries over crm_data open in this backend (act_as refuses to switch under them) */
extern bool crm_data_queries_open(void);
extern void crm_masking_check_utility(Node *stmt);

/* guard.c: field levels (cached) and the write guard */
typedef struct CrmFieldLevel
{
	char	   *name;
	int			attnum;			/* 0: the table has no such column now; check with crm_attnum_valid */
	Oid			atttypid;
	int			rank;			/* 0 hidden, 1 masked, 2 read, 3 write: on others' records */
	int			own_rank;		/* on the principal's own records */
	char	   *mask;			/* mask name for 'masked' */
	char	   *default_text;	/* NULL: no default */
	int			kind;			/* CRM_FIELD_PLAIN, _ENCRYPTED, or _BLIND_INDEX (its field's levels) */
	bool		sensitive;		/* sensitivity 'sensitive': unmasked reads are audited */
} CrmFieldLevel;
#define CRM_FIELD_PLAIN 0
#define CRM_FIELD_ENCRYPTED 1
#define CRM_FIELD_BLIND_INDEX 2
typedef struct CrmFieldLevels
{
	int			nfields;		/* fields below 'write' somewhere */
	CrmFieldLevel *fields;
	bool		any_unreadable; /* some field is masked or hidden somewhere, or encrypted */
} CrmFieldLevels;
extern CrmFieldLevels *crm_field_levels(int64 principal, Relation rel);
extern void crm_guard_reset(void);
extern uint64 crm_levels_generation;	/* bumped whenever field levels may have changed */

/* crypt.c: encryption at rest */
extern char *crm_keyring;
extern void crm_crypt_init(void);
extern void crm_crypt_reset(void);
extern void crm_crypt_rel_reset(void);
extern char *crm_crypt_plaintext(Relation rel, const char *field, struct varlena *stored);
extern HeapTuple crm_crypt_row(Relation rel, HeapTuple newtup, HeapTuple oldtup, bool is_principal,
							   struct Bitmapset **changed);
extern int64 crm_crypt_make_bidx_key(const char *subject);

/* bidxkey.c: blind-index keys and their rotation */
#define CRM_BIDX_MAX_KEYS 4
extern bool crm_bidx_rebuilding;	/* a rotation's rebuild is writing: stamps and rules stay still */
extern int	crm_bidx_subjects(const char *const **subjects);	/* [0]: the key writes use */
extern void crm_bidx_reset(void);
extern bool crm_bidx_taken(const char *object, const char *column, struct varlena *hash, int64 self);
extern uint64 crm_dk_generation;
extern int	crm_keyring_count(void);
extern const char *crm_keyring_key_id(int i);
extern void crm_keyring_derive(int i, const char *label, uint8 *out);
extern bool crm_keyring_legacy_audit(uint8 *out);
extern void crm_subject_key_make(const char *subject, int64 customer_id);
extern bool crm_data_key_secret(int64 dkid, const char *mkid, bytea *wrapped, const char *label, uint8 *out);


/* hooks.c: executor and utility hooks (preloaded only) */
extern void crm_hooks_init(void);

/* copies.c: no silent copies of crm_data; policies and rules on what reads it */
typedef struct CrmCopyFrame CrmCopyFrame;
struct QueryDesc;
struct Query;
extern CrmCopyFrame *crm_copies_push(Node *stmt, bool explain_analyze);
extern void crm_copies_pop(CrmCopyFrame *f);
extern void crm_copies_check_utility(Node *stmt);
extern void crm_copies_check_ddl(Node *stmt);
extern void crm_copies_check_large_object(void);
extern void crm_copies_after_utility(Node *stmt, CrmCopyFrame *copy);
extern void crm_copies_executor_start(struct QueryDesc *qd, int eflags);
extern void crm_copies_executor_end(struct QueryDesc *qd);
extern CrmCopyFrame *crm_copies_enter(struct QueryDesc *qd, bool run, bool *reading);
extern void crm_copies_leave(CrmCopyFrame *f, bool reading);
extern void crm_copies_write_done(struct QueryDesc *qd);
extern CrmCopyFrame *crm_copies_plan_begin(struct Query *q);
extern void crm_copies_plan_end(CrmCopyFrame *f, bool ok);
extern void crm_copies_init(void);

/* masking.c: dynamic masking (preloaded only) */
extern void crm_masking_init(void);
extern void crm_masking_reset(void);
extern void crm_masking_actor_changed(void);

/* identity.c: the acting principal */
extern int64 crm_current_principal(bool *found);
extern void crm_identity_init(void);
extern void crm_identity_reset(void);
extern int64 crm_last_principal;
extern void crm_push_principal(int64 principal);
extern void crm_pop_principal(void);

/* rules.c: automation */
extern int	crm_rule_max_depth;
extern int32 crm_today_date(void);	/* a DateADT: crm.today or the current date */
extern void crm_rules_reset(void);
extern void crm_scheduler_init(void);

/* workflow.c */
extern void crm_drop_trigger(Oid relid, const char *name);

/* audit.c: the audit log */
extern bool crm_audit_internal_ddl;
extern void crm_audit_rel_reset(void);
extern void crm_audit_flush_pending(void);

/* an event of another session, as the audit writer inserts it (NULL: none, for the optional) */
typedef struct CrmAuditRow
{
	TimestampTz at;
	int64		principal;		/* 0: none */
	const char *session_user;
	const char *current_user;
	const char *client_addr;	/* optional */
	const char *app;
	const char *action;
	const char *object;			/* optional */
	int64		record_id;		/* 0: none */
	const char *detail;			/* optional, JSON text */
} CrmAuditRow;
extern bool crm_audit_insert_rows(const CrmAuditRow *rows, int n);
extern void crm_audit_event(const char *action, const char *object, int64 record_id, const char *detail);
extern int64 crm_audit_seal_internal(void);
extern void crm_audit_check_utility(Node *stmt);
extern void crm_audit_hooks_init(void);
extern void crm_audit_after_utility(Node *stmt, const char *query, bool toplevel);

/* auditread.c: READ_SENSITIVE and EXPORT */
struct QueryDesc;
struct Query;
extern void crm_auditread_start(void);
extern void crm_auditread_end(struct QueryDesc *qd);
extern void crm_auditread_abort(void);
extern void crm_auditread_mark(struct Query *q, int rti, Relation rel, CrmFieldLevels *levels, Oid saw_fn);

/* auditq.c: events that outlive their transaction; the audit worker */
extern int	crm_audit_max_ids;
extern int	crm_audit_max_value_bytes;
extern int	crm_export_threshold;
extern void crm_auditq_init(void);
struct BackgroundWorkerHandle;
extern void crm_wait_worker(struct BackgroundWorkerHandle *h);
extern bool crm_run_db_worker(const char *function, const char *type, const char *db);
extern void crm_auditq_mark_dirty(void);
extern bool crm_auditq_push(const char *db, const char *action, const char *object, int64 record_id, int64 principal,
							const char *session_user, const char *current_user, const char *client_addr,
							const char *app, const char *detail);
extern void crm_auditq_session_event(const char *action, const char *object, int64 record_id, int64 principal,
									 const char *detail);
/* an event's detail (JSON text) is at most this long; longer ones are replaced by their length */
#define CRM_AUDIT_DETAIL_LEN 2048

extern void crm_auditq_release_db(Oid dbid);
extern void crm_auditq_resume_db(Oid dbid);
struct Port;
extern void crm_client_addr(struct Port *port, char *addr, size_t size);

/* auditlogin.c: LOGIN, LOGIN_FAILED and DENIED */
extern void crm_auditlogin_init(void);

/* sha256.c: SHA-256 and HMAC-SHA256 without per-call allocation */
typedef struct CrmSha256
{
	uint64		opaque[16];		/* an OpenSSL SHA256_CTX */
} CrmSha256;
typedef struct CrmHmacKey
{
	CrmSha256	inner;
	CrmSha256	outer;
} CrmHmacKey;
extern void crm_sha256_init(CrmSha256 *c);
extern void crm_sha256_update(CrmSha256 *c, const void *data, size_t len);
extern void crm_sha256_final(CrmSha256 *c, uint8 *out);
extern void crm_sha256(const void *data, size_t len, uint8 *out);
extern void crm_hmac_key(CrmHmacKey *k, const uint8 *key, size_t len);
extern void crm_hmac_start(const CrmHmacKey *k, CrmSha256 *c);
extern void crm_hmac_finish(const CrmHmacKey *k, CrmSha256 *c, uint8 *out);

/* auditkeys.c: the audit log's keys, from the keyring (hashes of protected values, digests) */
typedef struct CrmAuditSubject
{
	bool		resolved;
	char	   *subject;		/* "customer:<id>" or "object:<name>" */
	int64		customer_id;
} CrmAuditSubject;
extern void crm_audit_row_subject(Relation rel, const char *object, HeapTuple tup, CrmAuditSubject *s);
extern void crm_audit_value_hash(const char *object, CrmAuditSubject *s, const char *field,
								 const char *value, size_t len, struct StringInfoData *out);
extern void crm_audit_digest_key(const char *key_id, bool legacy, CrmHmacKey *out, const char **used_id);
extern void crm_audit_keys_reset(void);

/* validate.c: validators return NULL when the value is good, else the reason */
extern const char *crm_cn_id_number_problem(const char *s, size_t len);
extern const char *crm_uscc_problem(const char *s, size_t len);
extern const char *crm_bank_card_problem(const char *s, size_t len);
extern const char *crm_cn_mobile_problem(const char *s, size_t len);
extern const char *crm_email_problem(const char *s, size_t len);
extern void crm_check_document_value(const char *obj, const char *fld, const char *dtype, const char *s, size_t len);

/* args.c: NULL arguments refused by name; user values cut short for error messages */
extern void crm_require_arg(FunctionCallInfo fcinfo, int argno, const char *func, const char *argname);
extern const char *crm_short(const char *s);	/* errmsg: 64 characters */
extern const char *crm_shortn(const char *s, int n);	/* errdetail, errhint: 256 */

#endif							/* CRM_H */
