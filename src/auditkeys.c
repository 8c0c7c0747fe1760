/*
 * auditkeys.c: the audit log's keys. None is stored in the database: all are derived from the
 * master keys of the keyring file (crm.keyring, crypt.c) and from the subjects' data keys.
 *
 * Hashes of protected values. The audit log keeps, for a personal, sensitive or encrypted field, a
 * keyed hash of the value instead of the value ("<key id>:<32 hex digits>"):
 *
 *   A_i    = HKDF-SHA256(master key i, salt "crm keyring v1", info "crm audit v1")
 *   S_s    = HMAC-SHA256(data key of subject s, "crm audit subject v1")
 *   K_i,s  = HMAC-SHA256(A_i, S_s)
 *   hash   = first 16 bytes of HMAC-SHA256(K_i,s, object NUL field NUL value)
 *
 * where i is the current (last) master key of the keyring when the entry is written, and s is the
 * customer the record belongs to ("customer:<id>": the customer itself, or the customer above it
 * through inherit_access references) or, for a record with no customer above it, its object
 * ("object:<name>"). Shredding the customer's data key (crm.forget_subject) takes S_s with it, so
 * no earlier hash of that customer can be computed again, in this database or in any restored
 * copy (the shredded-key list refuses old copies of the wrapped key). The chain covers the stored
 * bytes, so crm.audit_verify() is not affected. Appending a master key changes A for new entries
 * only; older entries name their key and stay matchable while it is in the keyring.
 *
 * Digests. crm.audit_digest() signs with HKDF(master key i, "crm audit digest v1") and records i.
 *
 * Legacy (0.1). A 0.1 database kept one random audit key in the table crm.audit_key. Its hashes
 * have no "<key id>:" prefix. The operator moves that key into the keyring as the line
 * "legacy:audit <64 hex>" (crm.audit_legacy_key() prints it), and crm.audit_legacy_key_drop()
 * then drops the table. The legacy key only matches old hashes and checks old digests.
 */
#include "crm.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"

#define AUDIT_LABEL		"crm audit v1"
#define DIGEST_LABEL	"crm audit digest v1"
#define SUBJECT_LABEL	"crm audit subject v1"
#define HASH_BYTES		16

/* --- whose record: the subject of a row ------------------------------------------------------------- */

typedef struct ParentInfo
{
	char		object[NAMEDATALEN];
	bool		has_parent;
	char		field[NAMEDATALEN];
	char		parent[NAMEDATALEN];
} ParentInfo;

static HTAB *parents = NULL;
static MemoryContext parents_cxt = NULL;

/*
 * A managed table or crm's metadata changed (the parents of objects may have). The subjects'
 * secrets are not dropped here: a table's relcache invalidation (an autovacuum's statistics, a
 * new partition) happens all the time under load, and they follow crypt.c's key caches instead.
 */
void
crm_audit_keys_reset(void)
{
	parents = NULL;
	crm_cache_retire(&parents_cxt);
}

static ParentInfo *
parent_of(const char *object)
{
	ParentInfo *p;
	bool		found;
	ParentInfo	tmp;
	Oid			t[1] = {TEXTOID};
	Datum		v[1];
	Datum		o[2];
	bool		on[2];

	if (strlen(object) >= NAMEDATALEN)
		return NULL;
	if (parents == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(ParentInfo);
		ctl.hcxt = crm_cache_context(&parents_cxt, "crm audit subjects");
		parents = hash_create("crm audit subjects", 32, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	p = hash_search(parents, object, HASH_FIND, &found);
	if (found)
		return p;
	crm_watch_catalogs();
	memset(&tmp, 0, sizeof(tmp));
	strlcpy(tmp.object, object, NAMEDATALEN);
	v[0] = CStringGetTextDatum(object);
	if (crm_query_row_as_owner("SELECT x.field, x.parent FROM crm._parent_of($1) x WHERE x.field IS NOT NULL",
							   1, t, v, o, on, 2) && !on[0] && !on[1])
	{
		tmp.has_parent = true;
		strlcpy(tmp.field, TextDatumGetCString(o[0]), NAMEDATALEN);
		strlcpy(tmp.parent, TextDatumGetCString(o[1]), NAMEDATALEN);
	}
	if (parents == NULL)		/* reset meanwhile */
		return parent_of(object);
	p = hash_search(parents, object, HASH_ENTER, &found);
	*p = tmp;
	return p;
}

static void
set_customer(CrmAuditSubject *s, int64 id)
{
	s->customer_id = id;
	s->subject = psprintf("customer:%lld", (long long) id);
	s->resolved = true;
}

/*
 * The subject of a row of a managed table: the customer itself, the customer above it (climbing
 * inherit_access references, at most 8 levels), or its object.
 */
void
crm_audit_row_subject(Relation rel, const char *object, HeapTuple tup, CrmAuditSubject *s)
{
	TupleDesc	desc = RelationGetDescr(rel);
	ParentInfo *p;
	bool		isnull;
	int			att;

	if (s->resolved)
		return;
	s->customer_id = 0;
	if (RelationGetNamespace(rel) == get_namespace_oid("crm_data", true))
	{
		if (strcmp(object, "customer") == 0)
		{
			att = crm_attnum(desc, "id");
			if (crm_attnum_valid(desc, att, "id", INT8OID))
			{
				Datum		d = heap_getattr(tup, att, desc, &isnull);

				if (!isnull)
				{
					set_customer(s, DatumGetInt64(d));
					return;
				}
			}
		}
		else if ((p = parent_of(object)) != NULL && p->has_parent &&
				 crm_attnum_valid(desc, (att = crm_attnum(desc, p->field)), p->field, INT8OID))
		{
			Datum		d = heap_getattr(tup, att, desc, &isnull);
			char		pobj[NAMEDATALEN];
			int64		id;

			strlcpy(pobj, p->parent, NAMEDATALEN);
			for (int depth = 0; !isnull && depth < 8; depth++)
			{
				Oid			t[1] = {INT8OID};
				Datum		v[1];
				Datum		o[1];
				bool		on[1];

				id = DatumGetInt64(d);
				if (strcmp(pobj, "customer") == 0)
				{
					set_customer(s, id);
					return;
				}
				if ((p = parent_of(pobj)) == NULL || !p->has_parent)
					break;
				v[0] = Int64GetDatum(id);
				if (!crm_query_row_as_owner(psprintf("SELECT t.%s FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $1",
													 quote_identifier(p->field), quote_identifier(pobj)),
											1, t, v, o, on, 1))
					break;
				d = o[0];
				isnull = on[0];
				strlcpy(pobj, p->parent, NAMEDATALEN);
			}
		}
	}
	s->subject = psprintf("object:%s", object);
	s->resolved = true;
}

/* --- keyed hashes ------------------------------------------------------------------------------------ */

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
hash_with(const uint8 *key, const char *object, const char *field, const char *value, size_t len, StringInfo out)
{
	CrmHmacKey	k;
	CrmSha256	c;
	uint8		h[32];

	crm_hmac_key(&k, key, 32);
	crm_hmac_start(&k, &c);
	crm_sha256_update(&c, object, strlen(object) + 1);
	crm_sha256_update(&c, field, strlen(field) + 1);
	crm_sha256_update(&c, value, len);
	crm_hmac_finish(&k, &c, h);
	hex(h, HASH_BYTES, out);
	explicit_bzero(&k, sizeof(k));
	explicit_bzero(h, sizeof(h));
}

/*
 * Subject secrets S_s, cached per backend: the first use of a subject costs a query and an unwrap,
 * later ones a hash lookup. The cache is dropped whenever crypt.c drops its data keys (a key
 * shredded or re-wrapped in any backend, the key file or the shredded-key list changed), so a
 * shredded subject is never hashed from a stale secret.
 */
typedef struct SecretEntry
{
	char		subject[NAMEDATALEN + 16];
	bool		usable;			/* false: shredded */
	uint8		secret[32];
	int			kindex;			/* master key of k, or -1 */
	char		kid[64];
	CrmHmacKey	k;				/* K_kindex,s prepared */
} SecretEntry;

static HTAB *secrets = NULL;
static MemoryContext secrets_cxt = NULL;
static uint64 secrets_generation = 0;

static void
secrets_reset(void)
{
	if (secrets != NULL)
	{
		HASH_SEQ_STATUS st;
		SecretEntry *e;

		hash_seq_init(&st, secrets);
		while ((e = hash_seq_search(&st)) != NULL)
			explicit_bzero(e, sizeof(*e));
	}
	secrets = NULL;
	crm_cache_retire(&secrets_cxt);
}

/*
 * The stored row of a subject's data key, read with the latest snapshot (it may have been made just
 * now, or shredded by a transaction that committed since this statement began). Read straight
 * through the unique index on subject: the first use of each customer in a backend pays for it, and
 * a query through SPI (user switch, executor) cost more than the rest of the row's audit (measured).
 */
static bool
subject_row(const char *subject, int64 *dkid, char **mkid, bytea **wrapped)
{
	Oid			nsp = get_namespace_oid("crm", false);
	Oid			relid = get_relname_relid("data_key", nsp);
	Oid			idx = get_relname_relid("data_key_subject_key", nsp);
	Relation	rel;
	Relation	irel;
	TupleDesc	desc;
	int			a_id, a_subject, a_mkid, a_wrapped;
	Snapshot	snap;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	bool		found = false;

	if (!OidIsValid(relid) || !OidIsValid(idx))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("crm's data key table or its index on subject is missing"),
				 errhint("crm.data_key and its unique index data_key_subject_key are made by CREATE EXTENSION crm.")));
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	a_id = crm_attnum(desc, "id");
	a_subject = crm_attnum(desc, "subject");
	a_mkid = crm_attnum(desc, "master_key_id");
	a_wrapped = crm_attnum(desc, "wrapped");
	if (!crm_attnum_valid(desc, a_id, "id", INT8OID) || !crm_attnum_valid(desc, a_subject, "subject", TEXTOID) ||
		!crm_attnum_valid(desc, a_mkid, "master_key_id", TEXTOID) || !crm_attnum_valid(desc, a_wrapped, "wrapped", BYTEAOID))
		elog(ERROR, "crm.data_key does not have the columns crm expects");
	irel = index_open(idx, AccessShareLock);
	ScanKeyEntryInitialize(&key, 0, a_subject, BTEqualStrategyNumber, InvalidOid,
						   irel->rd_indcollation[0], F_TEXTEQ, CStringGetTextDatum(subject));
	index_close(irel, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, idx, true, snap, 1, &key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		w;

		*dkid = DatumGetInt64(heap_getattr(tup, a_id, desc, &isnull));
		*mkid = TextDatumGetCString(heap_getattr(tup, a_mkid, desc, &isnull));
		w = heap_getattr(tup, a_wrapped, desc, &isnull);
		*wrapped = isnull ? NULL : DatumGetByteaPCopy(w);
		found = true;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The cached secret of a subject. create: make its data key if it has none (a write). NULL when
 * it has none and !create (nothing is cached then: a later write makes one).
 */
static SecretEntry *
subject_secret(const char *subject, int64 customer_id, bool create)
{
	SecretEntry *e;
	SecretEntry tmp;
	bool		found;
	int64		dkid;
	char	   *mkid;
	bytea	   *wrapped;

	(void) crm_keyring_count();		/* the key file, checked once a transaction (may drop the caches) */
	if (strlen(subject) >= sizeof(tmp.subject))
		elog(ERROR, "crm subject name too long");
	if (secrets != NULL && secrets_generation != crm_dk_generation)
		secrets_reset();
	if (secrets == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(tmp.subject);
		ctl.entrysize = sizeof(SecretEntry);
		ctl.hcxt = crm_cache_context(&secrets_cxt, "crm audit subject keys");
		secrets = hash_create("crm audit subject keys", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		secrets_generation = crm_dk_generation;
	}
	e = hash_search(secrets, subject, HASH_FIND, &found);
	if (found)
		return e;
	crm_watch_catalogs();
	memset(&tmp, 0, sizeof(tmp));
	strlcpy(tmp.subject, subject, sizeof(tmp.subject));
	tmp.kindex = -1;
	if (!subject_row(subject, &dkid, &mkid, &wrapped))
	{
		if (!create)
			return NULL;
		crm_subject_key_make(subject, customer_id);
		CommandCounterIncrement();	/* the row just made, for the snapshot below */
		if (!subject_row(subject, &dkid, &mkid, &wrapped))
			elog(ERROR, "could not find the data key just made for %s", subject);
	}
	tmp.usable = wrapped != NULL && crm_data_key_secret(dkid, mkid, wrapped, SUBJECT_LABEL, tmp.secret);
	/* (making or unwrapping a key may have dropped the caches: start again from an empty one) */
	if (secrets == NULL || secrets_generation != crm_dk_generation)
	{
		explicit_bzero(&tmp, sizeof(tmp));
		return subject_secret(subject, customer_id, create);
	}
	e = hash_search(secrets, subject, HASH_ENTER, &found);
	*e = tmp;
	explicit_bzero(&tmp, sizeof(tmp));
	return e;
}

/* K_i,s prepared, or false when the subject has no usable key (shredded; none and !create) */
static bool
subject_hash_key(int i, const char *subject, int64 customer_id, bool create, CrmHmacKey *out)
{
	SecretEntry *e = subject_secret(subject, customer_id, create);
	uint8		a[32], k[32];
	CrmHmacKey	ak;
	CrmSha256	c;

	if (e == NULL || !e->usable)
		return false;
	if (e->kindex == i && strcmp(e->kid, crm_keyring_key_id(i)) == 0)
	{
		*out = e->k;
		return true;
	}
	crm_keyring_derive(i, AUDIT_LABEL, a);
	crm_hmac_key(&ak, a, 32);
	crm_hmac_start(&ak, &c);
	crm_sha256_update(&c, e->secret, 32);
	crm_hmac_finish(&ak, &c, k);
	crm_hmac_key(out, k, 32);
	/* keep the current key's: it is the one writes use */
	if (i == crm_keyring_count() - 1)
	{
		e->kindex = i;
		strlcpy(e->kid, crm_keyring_key_id(i), sizeof(e->kid));
		e->k = *out;
	}
	explicit_bzero(a, sizeof(a));
	explicit_bzero(k, sizeof(k));
	explicit_bzero(&ak, sizeof(ak));
	return true;
}

static void
hash_prepared(const CrmHmacKey *k, const char *object, const char *field, const char *value, size_t len, StringInfo out)
{
	CrmSha256	c;
	uint8		h[32];

	crm_hmac_start(k, &c);
	crm_sha256_update(&c, object, strlen(object) + 1);
	crm_sha256_update(&c, field, strlen(field) + 1);
	crm_sha256_update(&c, value, len);
	crm_hmac_finish(k, &c, h);
	hex(h, HASH_BYTES, out);
	explicit_bzero(h, sizeof(h));
}

/*
 * The hash an entry keeps for a protected value of a record of this subject, under the current
 * master key: "<key id>:<hex>". A subject whose key was shredded has no hash any more: "erased".
 */
void
crm_audit_value_hash(const char *object, CrmAuditSubject *s, const char *field, const char *value, size_t len,
					 StringInfo out)
{
	int			n = crm_keyring_count();
	CrmHmacKey	k;

	Assert(s->resolved);
	if (!subject_hash_key(n - 1, s->subject, s->customer_id, true, &k))
	{
		appendStringInfoString(out, "erased");
		return;
	}
	appendStringInfo(out, "%s:", crm_keyring_key_id(n - 1));
	hash_prepared(&k, object, field, value, len, out);
	explicit_bzero(&k, sizeof(k));
}

/* the index of the master key with this id, or -1 */
static int
keyring_find(const char *id)
{
	int			n = crm_keyring_count();

	for (int i = 0; i < n; i++)
		if (strcmp(crm_keyring_key_id(i), id) == 0)
			return i;
	return -1;
}

/*
 * The key of digest signatures: of master key key_id (NULL: the current one; *used_id is set), or
 * the legacy key. A key that is gone is an error.
 */
void
crm_audit_digest_key(const char *key_id, bool legacy, CrmHmacKey *out, const char **used_id)
{
	uint8		k[32];
	int			i;

	if (legacy)
	{
		if (!crm_keyring_legacy_audit(k))
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("the digest was signed with the legacy audit key, which is not in the crm key file \"%s\"", crm_keyring),
					 errhint("Add the line printed by crm.audit_legacy_key() before the migration (see docs/audit.md).")));
	}
	else
	{
		i = key_id ? keyring_find(key_id) : crm_keyring_count() - 1;
		if (i < 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("master key \"%s\" of the digest is not in the crm key file \"%s\"", crm_short(key_id), crm_keyring),
					 errhint("Keep every master key that signed digests you still check in the key file.")));
		crm_keyring_derive(i, DIGEST_LABEL, k);
		if (used_id)
			*used_id = crm_keyring_key_id(i);
	}
	crm_hmac_key(out, k, 32);
	explicit_bzero(k, sizeof(k));
}

/* --- SQL: matching known values ------------------------------------------------------------------- */

typedef struct HashArgs
{
	char	   *object;
	char	   *field;
	text	   *value;
	char	   *subject;
	int64		customer_id;
} HashArgs;

static void
hash_args(FunctionCallInfo fcinfo, const char *fn, HashArgs *a)
{
	crm_require_arg(fcinfo, 0, fn, "object");
	crm_require_arg(fcinfo, 1, fn, "field");
	a->object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	a->field = text_to_cstring(PG_GETARG_TEXT_PP(1));
	a->value = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	if (strlen(a->object) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("object \"%s\" does not exist", crm_short(a->object))));
	if (PG_ARGISNULL(3))
	{
		if (strcmp(a->object, "customer") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s needs the customer whose value it hashes", fn),
					 errdetail("Values of a customer's records are hashed under a key of that customer."),
					 errhint("Pass the customer's id as customer_id.")));
		a->customer_id = 0;
		a->subject = psprintf("object:%s", a->object);
	}
	else
	{
		a->customer_id = PG_GETARG_INT64(3);
		a->subject = psprintf("customer:%lld", (long long) a->customer_id);
	}
}

/*
 * crm.audit_hash(object, field, value, customer_id DEFAULT NULL) returns text: the hash a new entry
 * would keep for this value (current master key). NULL: no entry can hold one (the customer was
 * forgotten, or never had a protected value logged).
 */
PG_FUNCTION_INFO_V1(crm_audit_hash);
Datum
crm_audit_hash(PG_FUNCTION_ARGS)
{
	HashArgs	a;
	StringInfoData s;
	CrmHmacKey	k;
	int			n;

	hash_args(fcinfo, "crm.audit_hash", &a);
	n = crm_keyring_count();
	if (a.value == NULL || !subject_hash_key(n - 1, a.subject, a.customer_id, false, &k))
		PG_RETURN_NULL();
	initStringInfo(&s);
	appendStringInfo(&s, "%s:", crm_keyring_key_id(n - 1));
	hash_prepared(&k, a.object, a.field, VARDATA_ANY(a.value), VARSIZE_ANY_EXHDR(a.value), &s);
	explicit_bzero(&k, sizeof(k));
	PG_RETURN_TEXT_P(cstring_to_text(s.data));
}

/*
 * crm.audit_hashes(object, field, value, customer_id DEFAULT NULL) returns text[]: the hash under
 * every master key of the keyring (current first), and the 0.1 form under the legacy key when the
 * keyring holds it. Empty when none can be computed (a forgotten customer).
 */
PG_FUNCTION_INFO_V1(crm_audit_hashes);
Datum
crm_audit_hashes(PG_FUNCTION_ARGS)
{
	HashArgs	a;
	int			n;
	Datum	   *elems;
	int			ne = 0;
	uint8		k[32];
	const char *v;
	size_t		vlen;

	hash_args(fcinfo, "crm.audit_hashes", &a);
	if (a.value == NULL)
		PG_RETURN_NULL();
	v = VARDATA_ANY(a.value);
	vlen = VARSIZE_ANY_EXHDR(a.value);
	n = crm_keyring_count();
	elems = palloc(sizeof(Datum) * (n + 1));
	for (int i = n - 1; i >= 0; i--)
	{
		StringInfoData s;
		CrmHmacKey	hk;

		if (!subject_hash_key(i, a.subject, a.customer_id, false, &hk))
			break;				/* the subject's key is gone: for every master key */
		initStringInfo(&s);
		appendStringInfo(&s, "%s:", crm_keyring_key_id(i));
		hash_prepared(&hk, a.object, a.field, v, vlen, &s);
		explicit_bzero(&hk, sizeof(hk));
		elems[ne++] = CStringGetTextDatum(s.data);
	}
	if (crm_keyring_legacy_audit(k))
	{
		StringInfoData s;

		initStringInfo(&s);
		hash_with(k, a.object, a.field, v, vlen, &s);
		elems[ne++] = CStringGetTextDatum(s.data);
	}
	explicit_bzero(k, sizeof(k));
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, ne, TEXTOID, -1, false, TYPALIGN_INT));
}

/* --- SQL: migrating a 0.1 database ----------------------------------------------------------------- */

/*
 * crm.audit_legacy_key_drop() returns boolean: drops the table crm.audit_key of a 0.1 database once
 * the keyring holds its key as "legacy:audit"; refuses otherwise. Superusers only.
 */
PG_FUNCTION_INFO_V1(crm_audit_legacy_key_drop);
Datum
crm_audit_legacy_key_drop(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid("crm", false);
	Oid			relid = get_relname_relid("audit_key", nsp);
	Datum		o[1];
	bool		on[1];
	uint8		have[32];
	bytea	   *key;
	uint8		d = 0;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function crm.audit_legacy_key_drop"),
				 errhint("Migrating the audit key is a superuser's step (see docs/audit.md).")));
	if (!OidIsValid(relid))
		PG_RETURN_BOOL(false);	/* nothing left to drop */
	if (!crm_keyring_legacy_audit(have))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the crm key file \"%s\" holds no legacy audit key", crm_keyring),
				 errdetail("Dropping crm.audit_key now would make the audit log's older hashes and digests unverifiable."),
				 errhint("Append the line that crm.audit_legacy_key() prints to the key file, reload, and try again.")));
	if (!crm_query_row_as_owner("SELECT k.key FROM crm.audit_key k", 0, NULL, NULL, o, on, 1) || on[0])
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table crm.audit_key holds no key"),
				 errhint("Drop the table yourself if it is empty on purpose.")));
	key = DatumGetByteaPP(o[0]);
	if (VARSIZE_ANY_EXHDR(key) != 32)
		d = 1;
	else
		for (int i = 0; i < 32; i++)
			d |= ((const uint8 *) VARDATA_ANY(key))[i] ^ have[i];
	explicit_bzero(have, sizeof(have));
	if (d != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the legacy audit key in the crm key file \"%s\" is not the key in crm.audit_key", crm_keyring),
				 errhint("Copy the line that crm.audit_legacy_key() prints exactly.")));
	/* 0.1 made it a member of the extension: released first (crm's own DDL, past its guard) */
	crm_audit_internal_ddl = true;
	PG_TRY();
	{
		SPI_connect();
		if (getExtensionOfObject(RelationRelationId, relid) == get_extension_oid("crm", true) &&
			SPI_execute("ALTER EXTENSION crm DROP TABLE crm.audit_key", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not release crm.audit_key from the extension");
		if (SPI_execute("DROP TABLE crm.audit_key", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not drop crm.audit_key");
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_audit_internal_ddl = false;
	}
	PG_END_TRY();
	crm_audit_event("MAINTENANCE", NULL, 0, "{\"operation\": \"audit key moved to the keyring\"}");
	PG_RETURN_BOOL(true);
}
