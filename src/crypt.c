/*
 * crypt.c: encryption at rest for fields marked encrypted, their blind indexes, master-key
 * rotation and crypto-shredding.
 *
 * Keys. The master keys live outside the database, in the file named by crm.keyring (superuser
 * only, reload only): one "<key id> <64 hex digits>" per line, the last line being the current
 * key. Each customer (the "subject" of its records and of the records that follow it) has a
 * 512-bit data key: 256 bits for AES-256-CBC and 256 for HMAC-SHA256. Data keys are stored in
 * crm.data_key wrapped (AES-256-CBC + HMAC, encrypt-then-MAC) by a master key, so rotating the
 * master key re-wraps data keys and touches no row. Records with no customer above them use a
 * key per object; blind indexes use one key of their own (subject "blind_index", then
 * "blind_index:<version>" after each crm.rotate_blind_index_key(): see bidxkey.c, which also says
 * which blind-index keys are in use while a rotation rebuilds the indexes).
 *
 * Values. A stored value is "crm1$<data key id>$<base64(iv | ciphertext | mac)>": AES-256-CBC with
 * a random IV through pgcrypto, then a 128-bit HMAC over the key id, object, field, IV and
 * ciphertext (so a value cannot be moved to another field unnoticed). The write guard (guard.c)
 * encrypts on the way in; the masking hook (masking.c) reads every reference to the column
 * through crm._decrypt(), which applies the reader's field level itself. Principals never see
 * ciphertext; the maintenance role (superuser without a principal, pg_dump) sees only ciphertext.
 *
 * Shredding. crm.forget_subject() deletes the wrapped data key and, at commit, appends the key's
 * fingerprint to "<crm.keyring>.shredded" beside the master keys, so copies of the wrapped key in
 * old dumps or replicas are refused too: those values read as "[erased]".
 */
#include "crm.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "nodes/primnodes.h"
#include "storage/fd.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/datum.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#define CT_PREFIX		"crm1$"
#define CT_PREFIX_LEN	5
#define IV_LEN			16
#define MAC_LEN			16
#define DK_LEN			64		/* 32 bytes AES key, 32 bytes HMAC key */
#define MK_LEN			32
#define FP_LEN			16
#define WRAPPED_LEN		(IV_LEN + 80 + 32)	/* iv, AES-CBC of 64 bytes with padding, full HMAC */
#define ERASED_MARKER	"[erased]"

char	   *crm_keyring = NULL;

extern Datum crm_mask(PG_FUNCTION_ARGS);

/* --- primitives ---------------------------------------------------------------------------------- */

static void
hmac_parts(const uint8 *key, size_t klen, int n, const void *const *parts, const size_t *lens, uint8 *out)
{
	CrmHmacKey	k;
	CrmSha256	c;

	crm_hmac_key(&k, key, klen);
	crm_hmac_start(&k, &c);
	for (int i = 0; i < n; i++)
		crm_sha256_update(&c, parts[i], lens[i]);
	crm_hmac_finish(&k, &c, out);
	explicit_bzero(&k, sizeof(k));
	explicit_bzero(&c, sizeof(c));
}

static void
hmac1(const uint8 *key, size_t klen, const void *data, size_t len, uint8 *out)
{
	const void *parts[1] = {data};
	size_t		lens[1] = {len};

	hmac_parts(key, klen, 1, parts, lens, out);
}

/* constant-time comparison */
static bool
equal_ct(const uint8 *a, const uint8 *b, size_t n)
{
	uint8		d = 0;

	for (size_t i = 0; i < n; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

static void
random_bytes(uint8 *buf, size_t n)
{
	if (!pg_strong_random(buf, n))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a crm key or IV")));
}

/* AES-256-CBC (PKCS padding) through pgcrypto's encrypt_iv/decrypt_iv */
static PGFunction aes_encrypt_fn = NULL;
static PGFunction aes_decrypt_fn = NULL;
static text *aes_type = NULL;

static bytea *
make_bytea(const void *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

static bytea *
aes(bool encrypt, const uint8 *key, const uint8 *iv, const void *data, size_t len)
{
	if (aes_encrypt_fn == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		aes_type = cstring_to_text("aes-cbc/pad:pkcs");
		MemoryContextSwitchTo(old);
		aes_encrypt_fn = load_external_function("$libdir/pgcrypto", "pg_encrypt_iv", true, NULL);
		aes_decrypt_fn = load_external_function("$libdir/pgcrypto", "pg_decrypt_iv", true, NULL);
	}
	return DatumGetByteaPP(DirectFunctionCall4Coll(encrypt ? aes_encrypt_fn : aes_decrypt_fn, InvalidOid,
												   PointerGetDatum(make_bytea(data, len)),
												   PointerGetDatum(make_bytea(key, 32)),
												   PointerGetDatum(make_bytea(iv, IV_LEN)),
												   PointerGetDatum(aes_type)));
}

static void
put_be64(uint8 *p, int64 v)
{
	for (int i = 7; i >= 0; i--)
	{
		p[i] = (uint8) (v & 0xff);
		v >>= 8;
	}
}

/* --- the keyring ----------------------------------------------------------------------------------- */

typedef struct MasterKey
{
	char		id[64];
	uint8		enc[32];		/* derived: HMAC(key, "crm wrap enc") */
	uint8		mac[32];		/* derived: HMAC(key, "crm wrap mac") */
	uint8		prk[32];		/* HKDF-Extract(salt "crm keyring v1", key): see crm_keyring_derive */
} MasterKey;

static MasterKey *mkeys = NULL;		/* TopMemoryContext */
static int	n_mkeys = 0;
static uint8 (*shredded)[FP_LEN] = NULL;
static int	n_shredded = 0;
static char *loaded_path = NULL;
static struct stat loaded_st;
static struct stat loaded_shred_st;
static bool shred_file_exists = false;
static LocalTransactionId checked_lxid = InvalidLocalTransactionId;
static uint8 legacy_audit[MK_LEN];	/* a 0.1 database's audit key ("legacy:audit <hex>"), matching only */
static bool have_legacy_audit = false;
uint64		crm_dk_generation = 0;	/* bumped whenever the data key caches are dropped */

static void dk_cache_reset(void);

static char *
shred_path(void)
{
	return psprintf("%s.shredded", crm_keyring);
}

static bool
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
		a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static char *
read_whole_file(const char *path, const struct stat *st)
{
	FILE	   *f = AllocateFile(path, "r");
	char	   *buf;
	size_t		n;

	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open crm key file \"%s\": %m", path)));
	buf = palloc(st->st_size + 1);
	n = fread(buf, 1, st->st_size, f);
	FreeFile(f);
	buf[n] = '\0';
	return buf;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
parse_hex(const char *s, size_t len, uint8 *out, size_t outlen)
{
	if (len != outlen * 2)
		return false;
	for (size_t i = 0; i < outlen; i++)
	{
		int			h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);

		if (h < 0 || l < 0)
			return false;
		out[i] = (uint8) (h * 16 + l);
	}
	return true;
}

static void
check_mode(const char *path, const struct stat *st)
{
	if (st->st_mode & (S_IRWXG | S_IRWXO))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("crm key file \"%s\" is accessible to other users", path),
				 errdetail("A key file must not be readable or writable by its group or others."),
				 errhint("chmod 600 \"%s\"", path)));
}

static void
parse_keyring(const char *path, const struct stat *st)
{
	char	   *buf = read_whole_file(path, st);
	char	   *line = buf;
	int			lineno = 0;
	int			cap = 4, n = 0;
	MasterKey  *keys = MemoryContextAllocZero(TopMemoryContext, sizeof(MasterKey) * cap);

	PG_TRY();
	{
		while (line != NULL && *line != '\0')
		{
			char	   *next = strchr(line, '\n');
			char	   *id, *hex, *end;
			size_t		idlen, hexlen;
			uint8		raw[MK_LEN];

			if (next)
				*next++ = '\0';
			lineno++;
			while (*line == ' ' || *line == '\t' || *line == '\r')
				line++;
			end = line + strlen(line);
			while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
				*--end = '\0';
			if (*line == '\0' || *line == '#')
			{
				line = next;
				continue;
			}
			id = line;
			idlen = strcspn(id, " \t");
			hex = id + idlen;
			while (*hex == ' ' || *hex == '\t')
				hex++;
			hexlen = strlen(hex);
			if (idlen == 12 && strncmp(id, "legacy:audit", 12) == 0 && parse_hex(hex, hexlen, legacy_audit, MK_LEN))
			{
				/* not a master key: the audit key a 0.1 database kept in crm.audit_key (auditkeys.c) */
				have_legacy_audit = true;
				line = next;
				continue;
			}
			for (size_t i = 0; i < idlen; i++)
				if (!(isalnum((unsigned char) id[i]) || id[i] == '_' || id[i] == '-' || id[i] == '.'))
					idlen = 0;
			if (idlen == 0 || idlen >= sizeof(keys[0].id) || !parse_hex(hex, hexlen, raw, MK_LEN))
				ereport(ERROR,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("invalid line %d in crm key file \"%s\"", lineno, path),
						 errdetail("Each line is a key id (letters, digits, _ - .) and 64 hexadecimal digits (a 256-bit key); the last line is the current key."),
						 errhint("For example: k2026 followed by the output of: openssl rand -hex 32")));
			id[idlen] = '\0';
			for (int i = 0; i < n; i++)
				if (strcmp(keys[i].id, id) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_CONFIG_FILE_ERROR),
							 errmsg("crm key file \"%s\" lists key \"%s\" twice", path, crm_short(id))));
			if (n == cap)
			{
				cap *= 2;
				keys = repalloc(keys, sizeof(MasterKey) * cap);
			}
			strlcpy(keys[n].id, id, sizeof(keys[n].id));
			hmac1(raw, MK_LEN, "crm wrap enc", 12, keys[n].enc);
			hmac1(raw, MK_LEN, "crm wrap mac", 12, keys[n].mac);
			hmac1((const uint8 *) "crm keyring v1", 14, raw, MK_LEN, keys[n].prk);
			explicit_bzero(raw, sizeof(raw));
			n++;
			line = next;
		}
		if (n == 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("crm key file \"%s\" holds no key", path),
					 errhint("Add a line: a key id and 64 hexadecimal digits.")));
	}
	PG_CATCH();
	{
		explicit_bzero(buf, strlen(buf));
		pfree(keys);
		PG_RE_THROW();
	}
	PG_END_TRY();
	explicit_bzero(buf, strlen(buf));
	pfree(buf);
	if (mkeys)
	{
		explicit_bzero(mkeys, sizeof(MasterKey) * n_mkeys);
		pfree(mkeys);
	}
	mkeys = keys;
	n_mkeys = n;
}

static void
parse_shredded(const char *path, const struct stat *st)
{
	char	   *buf = read_whole_file(path, st);
	char	   *line = buf;
	int			n = 0, cap = 16;
	uint8		(*list)[FP_LEN] = MemoryContextAlloc(TopMemoryContext, FP_LEN * cap);

	while (line != NULL && *line != '\0')
	{
		char	   *next = strchr(line, '\n');

		if (next)
			*next++ = '\0';
		if (*line != '#' && strlen(line) >= FP_LEN * 2)
		{
			if (n == cap)
			{
				cap *= 2;
				list = repalloc(list, FP_LEN * cap);
			}
			if (parse_hex(line, FP_LEN * 2, list[n], FP_LEN))
				n++;
		}
		line = next;
	}
	pfree(buf);
	if (shredded)
		pfree(shredded);
	shredded = list;
	n_shredded = n;
}

/* Load (or confirm) the keyring: at most one stat() of each file per transaction. */
static void
keyring_require(void)
{
	struct stat st;
	char	   *spath;

	if (crm_keyring == NULL || crm_keyring[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("crm.keyring is not set"),
				 errdetail("Encrypted fields need the master key file named by the setting crm.keyring."),
				 errhint("Create a key file readable only by the server (see docs/encryption.md), set crm.keyring in postgresql.conf and reload.")));
	if (checked_lxid == MyProc->lxid && mkeys != NULL && loaded_path != NULL &&
		strcmp(loaded_path, crm_keyring) == 0)
		return;
	if (!is_absolute_path(crm_keyring))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("crm.keyring must be an absolute path, not \"%s\"", crm_keyring)));
	if (stat(crm_keyring, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read crm key file \"%s\": %m", crm_keyring),
				 errhint("crm.keyring names the master key file; check the setting and the file.")));
	check_mode(crm_keyring, &st);
	if (mkeys == NULL || loaded_path == NULL || strcmp(loaded_path, crm_keyring) != 0 ||
		!same_file(&st, &loaded_st))
	{
		/* forget the old keys first: a failed load leaves no keyring, not a stale one */
		if (mkeys)
		{
			explicit_bzero(mkeys, sizeof(MasterKey) * n_mkeys);
			pfree(mkeys);
			mkeys = NULL;
			n_mkeys = 0;
		}
		explicit_bzero(legacy_audit, sizeof(legacy_audit));
		have_legacy_audit = false;
		dk_cache_reset();
		parse_keyring(crm_keyring, &st);
		loaded_st = st;
		if (loaded_path)
			pfree(loaded_path);
		loaded_path = MemoryContextStrdup(TopMemoryContext, crm_keyring);
		shred_file_exists = false;
		n_shredded = 0;
		memset(&loaded_shred_st, 0, sizeof(loaded_shred_st));
	}
	spath = shred_path();
	if (stat(spath, &st) == 0)
	{
		check_mode(spath, &st);
		if (!shred_file_exists || !same_file(&st, &loaded_shred_st))
		{
			parse_shredded(spath, &st);
			loaded_shred_st = st;
			shred_file_exists = true;
			dk_cache_reset();
		}
	}
	else if (errno != ENOENT)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read crm shredded-key list \"%s\": %m", spath)));
	else if (shred_file_exists)
	{
		/* the list vanished: refuse rather than bring shredded keys back */
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("crm shredded-key list \"%s\" has disappeared", spath),
				 errhint("Restore it from where the key file is kept: it lists the data keys of forgotten customers.")));
	}
	checked_lxid = MyProc->lxid;
}

static MasterKey *
master_key(const char *id)
{
	for (int i = 0; i < n_mkeys; i++)
		if (strcmp(mkeys[i].id, id) == 0)
			return &mkeys[i];
	return NULL;
}

static bool
is_shredded(const uint8 *fp)
{
	for (int i = 0; i < n_shredded; i++)
		if (memcmp(shredded[i], fp, FP_LEN) == 0)
			return true;
	return false;
}

static void
fingerprint(const uint8 *dk, uint8 *fp)
{
	uint8		h[32];

	hmac1(dk, DK_LEN, "crm data key fingerprint", 24, h);
	memcpy(fp, h, FP_LEN);
}

/* --- data keys ----------------------------------------------------------------------------------- */

static bytea *
wrap_key(MasterKey *mk, int64 dkid, const uint8 *dk)
{
	uint8		iv[IV_LEN];
	uint8		idb[8];
	bytea	   *ct;
	uint8		mac[32];
	bytea	   *out;
	const void *parts[4];
	size_t		lens[4];

	random_bytes(iv, IV_LEN);
	ct = aes(true, mk->enc, iv, dk, DK_LEN);
	put_be64(idb, dkid);
	parts[0] = "crm-wrap-v1";
	lens[0] = 11;
	parts[1] = idb;
	lens[1] = 8;
	parts[2] = iv;
	lens[2] = IV_LEN;
	parts[3] = VARDATA_ANY(ct);
	lens[3] = VARSIZE_ANY_EXHDR(ct);
	hmac_parts(mk->mac, 32, 4, parts, lens, mac);
	if (IV_LEN + VARSIZE_ANY_EXHDR(ct) + 32 != WRAPPED_LEN)
		elog(ERROR, "unexpected wrapped key length");
	out = palloc(VARHDRSZ + WRAPPED_LEN);
	SET_VARSIZE(out, VARHDRSZ + WRAPPED_LEN);
	memcpy(VARDATA(out), iv, IV_LEN);
	memcpy(VARDATA(out) + IV_LEN, VARDATA_ANY(ct), 80);
	memcpy(VARDATA(out) + IV_LEN + 80, mac, 32);
	return out;
}

static void
unwrap_key(int64 dkid, const char *mkid, bytea *wrapped, uint8 *dk)
{
	MasterKey  *mk = master_key(mkid);
	uint8		idb[8];
	uint8		mac[32];
	const uint8 *w = (const uint8 *) VARDATA_ANY(wrapped);
	const void *parts[4];
	size_t		lens[4];
	bytea	   *plain;

	if (mk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("master key \"%s\" is not in the crm key file \"%s\"", crm_short(mkid), crm_keyring),
				 errdetail("Data key %lld is wrapped by it.", (long long) dkid),
				 errhint("Keep every master key that still wraps data keys in the key file; crm.rotate_master_key() moves them all to the current key.")));
	if (VARSIZE_ANY_EXHDR(wrapped) != WRAPPED_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("wrapped data key %lld has the wrong length", (long long) dkid)));
	put_be64(idb, dkid);
	parts[0] = "crm-wrap-v1";
	lens[0] = 11;
	parts[1] = idb;
	lens[1] = 8;
	parts[2] = w;
	lens[2] = IV_LEN;
	parts[3] = w + IV_LEN;
	lens[3] = 80;
	hmac_parts(mk->mac, 32, 4, parts, lens, mac);
	if (!equal_ct(mac, w + IV_LEN + 80, 32))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("data key %lld does not unwrap with master key \"%s\"", (long long) dkid, crm_short(mkid)),
				 errdetail("The key file holds a different key under that id, or the wrapped key was altered."),
				 errhint("Check that crm.keyring names the key file this database's keys were made with.")));
	plain = aes(false, mk->enc, w, w + IV_LEN, 80);
	if (VARSIZE_ANY_EXHDR(plain) != DK_LEN)
		elog(ERROR, "unwrapped data key %lld has the wrong length", (long long) dkid);
	memcpy(dk, VARDATA_ANY(plain), DK_LEN);
	explicit_bzero(VARDATA_ANY(plain), DK_LEN);
}

/* data key id -> key; subject -> data key id. Both in TopMemoryContext, reset with crm's caches. */
typedef struct DkEntry
{
	int64		id;
	bool		erased;
	uint8		key[DK_LEN];
} DkEntry;

#define SUBJECT_LEN 96
typedef struct SubjectEntry
{
	char		subject[SUBJECT_LEN];
	int64		dkid;
	bool		erased;
} SubjectEntry;

static HTAB *dk_cache = NULL;
static HTAB *subject_cache = NULL;
static MemoryContext dk_cxt = NULL;	/* both tables; retired on reset (callers may hold entries) */

static void
dk_cache_reset(void)
{
	if (dk_cache != NULL)
	{
		HASH_SEQ_STATUS s;
		DkEntry    *e;

		hash_seq_init(&s, dk_cache);
		while ((e = hash_seq_search(&s)) != NULL)
			explicit_bzero(e->key, DK_LEN);
		dk_cache = NULL;
	}
	subject_cache = NULL;
	crm_cache_retire(&dk_cxt);
	crm_bidx_reset();
	crm_dk_generation++;
}

static void
dk_cache_init(void)
{
	HASHCTL		ctl;

	if (dk_cache == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(DkEntry);
		ctl.hcxt = crm_cache_context(&dk_cxt, "crm data keys");
		dk_cache = hash_create("crm data keys", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (subject_cache == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = SUBJECT_LEN;
		ctl.entrysize = sizeof(SubjectEntry);
		ctl.hcxt = crm_cache_context(&dk_cxt, "crm data keys");
		subject_cache = hash_create("crm data key subjects", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
}

/* A fixed statement through a kept plan, or planned now when no more plans can be kept. */
static int
spi_run(const char *sql, int nargs, Oid *types, Datum *vals, const char *nulls, bool read_only, long count)
{
	SPIPlanPtr	plan = crm_kept_plan(sql, nargs, types);

	return plan ? SPI_execute_plan(plan, vals, nulls, read_only, count)
		: SPI_execute_with_args(sql, nargs, types, vals, nulls, read_only, count);
}

/* The stored row of a data key, read with a fresh snapshot (it may have been made just now). */
static bool
key_row(int64 dkid, Datum *out, bool *nulls)
{
	CrmUserSwitch sw;
	volatile bool found = false;

	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[1] = {INT8OID};
		Datum		vals[1] = {Int64GetDatum(dkid)};

		SPI_connect();
		if (spi_run("SELECT d.master_key_id, d.wrapped FROM crm.data_key d WHERE d.id OPERATOR(pg_catalog.=) $1",
					1, types, vals, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "crm data key lookup failed");
		if (SPI_processed == 1)
		{
			out[0] = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &nulls[0]), false, -1);
			out[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &nulls[1]);
			if (!nulls[1])
				out[1] = SPI_datumTransfer(out[1], false, -1);
			found = true;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	return found;
}

/* The data key with this id (erased: shredded, the key is gone). */
static DkEntry *
data_key(int64 dkid)
{
	DkEntry    *e;
	bool		found;
	Datum		out[2];
	bool		nulls[2];
	DkEntry		tmp;

	keyring_require();
	dk_cache_init();
	e = hash_search(dk_cache, &dkid, HASH_FIND, &found);
	if (found)
		return e;
	crm_watch_catalogs();
	memset(&tmp, 0, sizeof(tmp));
	tmp.id = dkid;
	if (!key_row(dkid, out, nulls))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("data key %lld does not exist", (long long) dkid),
				 errhint("crm.data_key must be restored together with the tables whose values it encrypts.")));
	if (nulls[1])
		tmp.erased = true;
	else
	{
		uint8		fp[FP_LEN];

		unwrap_key(dkid, TextDatumGetCString(out[0]), DatumGetByteaPP(out[1]), tmp.key);
		fingerprint(tmp.key, fp);
		if (is_shredded(fp))
		{
			explicit_bzero(tmp.key, DK_LEN);
			tmp.erased = true;
		}
	}
	dk_cache_init();			/* the lookup may have reset the caches */
	e = hash_search(dk_cache, &dkid, HASH_ENTER, &found);
	*e = tmp;
	explicit_bzero(tmp.key, DK_LEN);
	return e;
}

/*
 * The data key of a subject ("customer:<id>", "object:<name>", "blind_index[:<version>]"), made on
 * first use (unless !create: then NULL when it has none). A shredded subject has no usable key:
 * new values for it are refused.
 */
static SubjectEntry *
subject_key(const char *subject, int64 customer_id, bool create)
{
	SubjectEntry *e;
	bool		found;
	SubjectEntry tmp;
	CrmUserSwitch sw;

	keyring_require();
	dk_cache_init();
	e = hash_search(subject_cache, subject, HASH_FIND, &found);
	if (found)
		return e;
	crm_watch_catalogs();
	memset(&tmp, 0, sizeof(tmp));
	strlcpy(tmp.subject, subject, SUBJECT_LEN);
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			t1[1] = {TEXTOID};
		Datum		v1[1] = {CStringGetTextDatum(subject)};
		bool		isnull;

		SPI_connect();
		for (int attempt = 0; attempt < 2 && tmp.dkid == 0; attempt++)
		{
			if (spi_run("SELECT d.id, d.wrapped IS NULL FROM crm.data_key d WHERE d.subject OPERATOR(pg_catalog.=) $1",
						1, t1, v1, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "crm data key lookup failed");
			if (SPI_processed == 1)
			{
				tmp.dkid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
				tmp.erased = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
				break;
			}
			else if (!create)
				break;
			else
			{
				uint8		dk[DK_LEN];
				int64		id;
				MasterKey  *mk = &mkeys[n_mkeys - 1];
				Oid			t5[5] = {INT8OID, TEXTOID, INT8OID, TEXTOID, BYTEAOID};
				Datum		v5[5];
				char		n5[5] = {' ', ' ', customer_id > 0 ? ' ' : 'n', ' ', ' '};

				if (spi_run("SELECT pg_catalog.nextval('crm.data_key_id_seq')", 0, NULL, NULL, NULL, false, 1) != SPI_OK_SELECT)
					elog(ERROR, "crm data key id failed");
				id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
				random_bytes(dk, DK_LEN);
				v5[0] = Int64GetDatum(id);
				v5[1] = CStringGetTextDatum(subject);
				v5[2] = Int64GetDatum(customer_id);
				v5[3] = CStringGetTextDatum(mk->id);
				v5[4] = PointerGetDatum(wrap_key(mk, id, dk));
				explicit_bzero(dk, DK_LEN);
				if (spi_run("INSERT INTO crm.data_key (id, subject, customer_id, master_key_id, wrapped)"
							" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject) DO NOTHING",
							5, t5, v5, n5, false, 0) != SPI_OK_INSERT)
					elog(ERROR, "crm data key insert failed");
				if (SPI_processed == 1)
					tmp.dkid = id;
				/* else someone made it concurrently: read theirs */
			}
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	if (tmp.dkid == 0 && !create)
		return NULL;
	if (tmp.dkid == 0)
		elog(ERROR, "could not make a data key for %s", subject);
	dk_cache_init();
	e = hash_search(subject_cache, subject, HASH_ENTER, &found);
	*e = tmp;
	return e;
}

/* Make the data key of a blind-index subject now (a rotation's new key); returns its id. */
int64
crm_crypt_make_bidx_key(const char *subject)
{
	return subject_key(subject, 0, true)->dkid;
}

/* --- per-table metadata ------------------------------------------------------------------------------ */

typedef struct CryptField
{
	char	   *name;
	int			attnum;
	char	   *type;
	int			doc_attnum;		/* document_type_field, or 0 */
	char	   *doc_name;
	int			bidx_attnum;	/* blind index column, or 0 */
	char	   *bidx_name;
	bool		bidx_unique;	/* the field is unique (checked under every blind-index key in use) */
} CryptField;

typedef struct CryptRel
{
	Oid			relid;
	char	   *object;
	int			nfields;
	CryptField *fields;
	int			parent_attnum;	/* inherit_access reference, or 0 */
	char	   *parent_name;
	char	   *parent_object;
} CryptRel;

static HTAB *crypt_rels = NULL;
static MemoryContext crypt_cxt = NULL;

/* A managed table changed: forget its encrypted fields (retired: callers may still hold them). */
void
crm_crypt_rel_reset(void)
{
	crypt_rels = NULL;
	crm_cache_retire(&crypt_cxt);
}

void
crm_crypt_reset(void)
{
	crm_crypt_rel_reset();
	dk_cache_reset();
}

static CryptRel *
crypt_rel_by_oid(Oid relid)
{
	CryptRel   *e;
	bool		found;
	CryptRel	tmp;
	CrmUserSwitch sw;
	Relation	rel;

	uint64		generation;
	MemoryContext build_cxt;

	if (crypt_rels == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CryptRel);
		ctl.hcxt = crm_cache_context(&crypt_cxt, "crm crypt metadata");
		crypt_rels = hash_create("crm crypt metadata", 32, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(crypt_rels, &relid, HASH_FIND, &found);
	if (found)
		return e;
	crm_watch_catalogs();
	generation = crm_cache_generation;
	crm_cache_watch_rel(relid);
	/* (crm_watch_catalogs may have taken in a reset that retired crypt_cxt: never build in NULL) */
	build_cxt = crm_cache_context(&crypt_cxt, "crm crypt metadata");
	memset(&tmp, 0, sizeof(tmp));
	tmp.relid = relid;
	rel = table_open(relid, AccessShareLock);
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			types[1] = {TEXTOID};
		Datum		vals[1] = {CStringGetTextDatum(RelationGetRelationName(rel))};
		TupleDesc	desc = RelationGetDescr(rel);
		MemoryContext old;

		SPI_connect();
		/* the latest snapshot: what the relation's descriptor says too (cache.c) */
		if (crm_spi_latest(crm_kept_plan("SELECT f.name, f.type, f.options OPERATOR(pg_catalog.->>) 'document_type_field',"
										 " COALESCE((f.options OPERATOR(pg_catalog.->>) 'searchable')::boolean, false), f.is_unique"
										 " FROM crm.field f WHERE f.object OPERATOR(pg_catalog.=) $1 AND f.encrypted ORDER BY f.position",
										 1, types), vals) != SPI_OK_SELECT)
			elog(ERROR, "crm crypt metadata query failed");
		/* (if a reset retires build_cxt meanwhile, the entry is built again below) */
		old = MemoryContextSwitchTo(build_cxt);
		tmp.object = pstrdup(RelationGetRelationName(rel));
		tmp.fields = palloc0(sizeof(CryptField) * Max(SPI_processed, 1));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			TupleDesc	d = SPI_tuptable->tupdesc;
			char	   *doc = SPI_getvalue(t, d, 3);
			bool		isnull;
			CryptField *f = &tmp.fields[tmp.nfields];

			f->name = pstrdup(SPI_getvalue(t, d, 1));
			f->attnum = crm_attnum(desc, f->name);
			/* a field without its column holds nothing to encrypt; one of another type is no longer crm's */
			if (f->attnum == 0)
				continue;
			if (!crm_attnum_valid(desc, f->attnum, f->name, TEXTOID))
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("encrypted field %s.%s is stored in a column of type %s, not text",
								RelationGetRelationName(rel), f->name,
								format_type_be(TupleDescAttr(desc, f->attnum - 1)->atttypid)),
						 errhint("Change fields through crm.drop_field() and crm.add_field(), not ALTER TABLE.")));
			f->type = pstrdup(SPI_getvalue(t, d, 2));
			f->doc_attnum = crm_attnum(desc, doc);
			if (f->doc_attnum > 0 && !crm_attnum_valid(desc, f->doc_attnum, doc, TEXTOID))
				f->doc_attnum = 0;
			f->doc_name = f->doc_attnum > 0 ? pstrdup(doc) : NULL;
			if (DatumGetBool(SPI_getbinval(t, d, 4, &isnull)))
			{
				f->bidx_name = psprintf("crm_bidx_%s", f->name);
				f->bidx_attnum = crm_attnum(desc, f->bidx_name);
				if (!crm_attnum_valid(desc, f->bidx_attnum, f->bidx_name, BYTEAOID))
					f->bidx_attnum = 0;
				f->bidx_unique = DatumGetBool(SPI_getbinval(t, d, 5, &isnull));
			}
			tmp.nfields++;
		}
		MemoryContextSwitchTo(old);
		if (tmp.nfields > 0)
		{
			if (SPI_execute_with_args("SELECT x.field, x.parent FROM crm._parent_of($1) x WHERE x.field IS NOT NULL",
									  1, types, vals, NULL, true, 1) != SPI_OK_SELECT)
				elog(ERROR, "crm crypt metadata query failed");
			if (SPI_processed == 1)
			{
				old = MemoryContextSwitchTo(build_cxt);
				tmp.parent_name = pstrdup(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
				tmp.parent_attnum = crm_attnum(desc, tmp.parent_name);
				if (!crm_attnum_valid(desc, tmp.parent_attnum, tmp.parent_name, INT8OID))
					tmp.parent_attnum = 0;
				tmp.parent_object = pstrdup(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
				MemoryContextSwitchTo(old);
			}
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
		table_close(rel, AccessShareLock);
	}
	PG_END_TRY();
	if (generation != crm_cache_generation || crypt_rels == NULL)	/* reset while we queried: again */
		return crypt_rel_by_oid(relid);
	e = hash_search(crypt_rels, &relid, HASH_ENTER, &found);
	*e = tmp;
	return e;
}

static Oid
data_relid(const char *object)
{
	Oid			nsp = get_namespace_oid("crm_data", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(object, nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("object \"%s\" does not exist", crm_short(object))));
	return relid;
}

static CryptField *
crypt_field(CryptRel *cr, const char *field)
{
	for (int i = 0; i < cr->nfields; i++)
		if (strcmp(cr->fields[i].name, field) == 0)
			return &cr->fields[i];
	return NULL;
}

/* --- values ------------------------------------------------------------------------------------------ */

static void
value_mac(const uint8 *dk, int64 dkid, const char *object, const char *field,
		  const uint8 *iv, const uint8 *ct, size_t ctlen, uint8 *mac)
{
	uint8		idb[8];
	uint8		full[32];
	const void *parts[6];
	size_t		lens[6];

	put_be64(idb, dkid);
	parts[0] = "crm1";
	lens[0] = 4;
	parts[1] = idb;
	lens[1] = 8;
	parts[2] = object;
	lens[2] = strlen(object) + 1;
	parts[3] = field;
	lens[3] = strlen(field) + 1;
	parts[4] = iv;
	lens[4] = IV_LEN;
	parts[5] = ct;
	lens[5] = ctlen;
	hmac_parts(dk + 32, 32, 6, parts, lens, full);
	memcpy(mac, full, MAC_LEN);
}

static text *
encrypt_value(int64 dkid, const uint8 *dk, const char *object, const char *field, const char *pt, size_t len)
{
	uint8		iv[IV_LEN];
	bytea	   *ct;
	size_t		ctlen;
	uint8	   *blob;
	size_t		bloblen;
	char	   *out;
	int			b64len;
	char		head[40];
	int			headlen;

	random_bytes(iv, IV_LEN);
	ct = aes(true, dk, iv, pt, len);
	ctlen = VARSIZE_ANY_EXHDR(ct);
	bloblen = IV_LEN + ctlen + MAC_LEN;
	blob = palloc(bloblen);
	memcpy(blob, iv, IV_LEN);
	memcpy(blob + IV_LEN, VARDATA_ANY(ct), ctlen);
	value_mac(dk, dkid, object, field, iv, (uint8 *) VARDATA_ANY(ct), ctlen, blob + IV_LEN + ctlen);
	headlen = snprintf(head, sizeof(head), CT_PREFIX "%lld$", (long long) dkid);
	out = palloc(headlen + pg_b64_enc_len(bloblen) + 1);
	memcpy(out, head, headlen);
	b64len = pg_b64_encode((char *) blob, bloblen, out + headlen, pg_b64_enc_len(bloblen));
	if (b64len < 0)
		elog(ERROR, "could not encode an encrypted value");
	return cstring_to_text_with_len(out, headlen + b64len);
}

/* The data key id of a stored value, or 0 when it is not one. */
static int64
ciphertext_dkid(const char *s, size_t len, const char **rest, size_t *restlen)
{
	int64		id = 0;
	size_t		i = CT_PREFIX_LEN;

	if (len < CT_PREFIX_LEN + 3 || memcmp(s, CT_PREFIX, CT_PREFIX_LEN) != 0)
		return 0;
	while (i < len && s[i] >= '0' && s[i] <= '9' && i < CT_PREFIX_LEN + 18)
		id = id * 10 + (s[i++] - '0');
	if (i >= len || s[i] != '$' || id <= 0)
		return 0;
	if (rest)
	{
		*rest = s + i + 1;
		*restlen = len - i - 1;
	}
	return id;
}

/*
 * Decrypt a stored value of object.field. Returns NULL with *erased set when its key was shredded.
 * Any other problem is an error naming the field.
 */
static text *
decrypt_value(text *stored, const char *object, const char *field, bool *erased)
{
	const char *s = VARDATA_ANY(stored);
	size_t		len = VARSIZE_ANY_EXHDR(stored);
	const char *b64;
	size_t		b64len;
	int64		dkid = ciphertext_dkid(s, len, &b64, &b64len);
	DkEntry    *dk;
	char	   *blob;
	int			bloblen;
	uint8		mac[MAC_LEN];
	bytea	   *pt;

	*erased = false;
	if (dkid == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("field %s.%s holds a value that is not crm ciphertext", crm_short(object), crm_short(field))));
	dk = data_key(dkid);
	if (dk->erased)
	{
		*erased = true;
		return NULL;
	}
	blob = palloc(pg_b64_dec_len(b64len) + 1);
	bloblen = pg_b64_decode(b64, b64len, blob, pg_b64_dec_len(b64len));
	if (bloblen < IV_LEN + 16 + MAC_LEN || (bloblen - IV_LEN - MAC_LEN) % 16 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value of field %s.%s is damaged", crm_short(object), crm_short(field))));
	value_mac(dk->key, dkid, object, field, (uint8 *) blob, (uint8 *) blob + IV_LEN,
			  bloblen - IV_LEN - MAC_LEN, mac);
	if (!equal_ct(mac, (uint8 *) blob + bloblen - MAC_LEN, MAC_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value of field %s.%s does not verify", crm_short(object), crm_short(field)),
				 errdetail("It was altered, or copied from another field.")));
	pt = aes(false, dk->key, (uint8 *) blob, blob + IV_LEN, bloblen - IV_LEN - MAC_LEN);
	return (text *) pt;			/* bytea and text share a representation */
}

/* --- normalisation and the blind index -------------------------------------------------------------- */

static char *
normalise(const char *type, const char *s, size_t len)
{
	StringInfoData b;

	initStringInfo(&b);
	while (len > 0 && isspace((unsigned char) *s))
		s++, len--;
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if ((strcmp(type, "cn_mobile") == 0 || strcmp(type, "bank_card") == 0) && (c == ' ' || c == '-'))
			continue;
		if (strcmp(type, "email") == 0)
			c = (char) pg_ascii_tolower((unsigned char) c);
		else if (strcmp(type, "cn_id_number") == 0 || strcmp(type, "uscc") == 0 || strcmp(type, "text") == 0)
			c = (char) pg_ascii_toupper((unsigned char) c);
		appendStringInfoChar(&b, c);
	}
	return b.data;
}

/*
 * The blind index of a value under one blind-index key (a crm.data_key subject): HMAC-SHA256, keyed
 * with the first 32 bytes of that data key, of "<object>\0<field>\0<normalised value>". The key
 * is made on first use when create; otherwise a key that no longer exists gives NULL.
 */
static bytea *
blind_index_under(const char *subject, bool create, const char *object, CryptField *f, const char *s, size_t len)
{
	SubjectEntry *se = subject_key(subject, 0, create);
	DkEntry    *dk;
	char	   *norm;
	uint8		h[32];
	const void *parts[3];
	size_t		lens[3];

	if (se == NULL)
		return NULL;
	dk = data_key(se->dkid);
	if (dk->erased)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the blind-index key %s is gone", crm_short(subject)),
				 errhint("Restore crm.data_key from the backup it was lost from, then run CALL crm.rotate_blind_index_key().")));
	norm = normalise(f->type, s, len);
	parts[0] = object;
	lens[0] = strlen(object) + 1;
	parts[1] = f->name;
	lens[1] = strlen(f->name) + 1;
	parts[2] = norm;
	lens[2] = strlen(norm);
	hmac_parts(dk->key, 32, 3, parts, lens, h);
	return make_bytea(h, 32);
}

/* The blind index a write stores: under the newest blind-index key. */
static bytea *
blind_index(const char *object, CryptField *f, const char *s, size_t len)
{
	const char *const *subjects;

	(void) crm_bidx_subjects(&subjects);
	return blind_index_under(subjects[0], true, object, f, s, len);
}

/*
 * While a rotation rebuilds the blind indexes, a unique field's new value must not match a record
 * still indexed under an older key (the unique index sees only the bytes).
 */
static void
bidx_unique_check(Relation rel, CryptRel *cr, CryptField *f, HeapTuple tup, const char *s, size_t len)
{
	const char *const *subjects;
	int			n = crm_bidx_subjects(&subjects);
	int64		self = 0;

	if (n < 2 || !f->bidx_unique)
		return;
	{
		bool		isnull;
		Datum		id = heap_getattr(tup, crm_std_attnum(rel, "id", INT8OID), RelationGetDescr(rel), &isnull);

		if (!isnull)
			self = DatumGetInt64(id);
	}
	for (int i = 1; i < n; i++)
	{
		bytea	   *h = blind_index_under(subjects[i], false, cr->object, f, s, len);

		if (h != NULL && crm_bidx_taken(cr->object, f->bidx_name, h, self))
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("duplicate value in unique field %s.%s", crm_short(cr->object), crm_short(f->name)),
					 errdetail("Another record has this value (found through its blind index under the previous key, during a blind-index key rotation).")));
	}
}

/* --- the row pass, called by the write guard ----------------------------------------------------------- */

/* "customer:<id>" when the record belongs to a customer, else "object:<name>" */
static const char *
row_subject(CryptRel *cr, Relation rel, HeapTuple tup, int64 *customer_id)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool		isnull;
	char	   *obj = cr->object;
	int64		id;

	*customer_id = 0;
	if (strcmp(obj, "customer") == 0)
	{
		id = DatumGetInt64(heap_getattr(tup, crm_std_attnum(rel, "id", INT8OID), desc, &isnull));
		*customer_id = id;
		return psprintf("customer:%lld", (long long) id);
	}
	if (cr->parent_attnum > 0 && crm_attnum_valid(desc, cr->parent_attnum, cr->parent_name, INT8OID))
	{
		Datum		p = heap_getattr(tup, cr->parent_attnum, desc, &isnull);
		char	   *pobj = cr->parent_object;

		if (!isnull)
		{
			id = DatumGetInt64(p);
			/* climb the chain of parents (holding -> customer, or deeper) */
			for (int depth = 0; depth < 8; depth++)
			{
				Datum		pf[2];
				bool		pfn[2];
				Datum		ov[1] = {CStringGetTextDatum(pobj)};
				Oid			ot[1] = {TEXTOID};
				Datum		out[1];
				bool		onull[1];
				Oid			types[1] = {INT8OID};
				Datum		vals[1] = {Int64GetDatum(id)};
				char	   *sql;

				if (strcmp(pobj, "customer") == 0)
				{
					*customer_id = id;
					return psprintf("customer:%lld", (long long) id);
				}
				if (!crm_query_row_as_owner("SELECT x.field, x.parent FROM crm._parent_of($1) x WHERE x.field IS NOT NULL",
											1, ot, ov, pf, pfn, 2) || pfn[0] || pfn[1])
					break;
				sql = psprintf("SELECT t.%s FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $1",
							   quote_identifier(TextDatumGetCString(pf[0])), quote_identifier(pobj));
				if (!crm_query_row_as_owner(sql, 1, types, vals, out, onull, 1) || onull[0])
					break;
				id = DatumGetInt64(out[0]);
				pobj = TextDatumGetCString(pf[1]);
			}
		}
	}
	return psprintf("object:%s", obj);
}

static void
validate_plain(CryptRel *cr, CryptField *f, Relation rel, HeapTuple tup, const char *s, size_t len)
{
	const char *problem = NULL;

	if (f->doc_attnum > 0 && crm_attnum_valid(RelationGetDescr(rel), f->doc_attnum, f->doc_name, TEXTOID))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, f->doc_attnum, RelationGetDescr(rel), &isnull);

		crm_check_document_value(cr->object, f->name, isnull ? NULL : TextDatumGetCString(d), s, len);
		return;
	}
	if (strcmp(f->type, "cn_id_number") == 0)
		problem = crm_cn_id_number_problem(s, len);
	else if (strcmp(f->type, "uscc") == 0)
		problem = crm_uscc_problem(s, len);
	else if (strcmp(f->type, "bank_card") == 0)
		problem = crm_bank_card_problem(s, len);
	else if (strcmp(f->type, "cn_mobile") == 0)
		problem = crm_cn_mobile_problem(s, len);
	else if (strcmp(f->type, "email") == 0)
		problem = crm_email_problem(s, len);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("invalid %s in field %s.%s: %s", crm_short(f->type), crm_short(cr->object), crm_short(f->name), problem)));
}

/*
 * Encrypt what a write puts into encrypted fields of a managed table, keep what it leaves
 * unchanged, and keep blind indexes in step. Sets *changed to the encrypted fields whose value
 * the write changes (compared as plaintext). Principals always write plaintext; the maintenance
 * role (e.g. a restore) may also write ciphertext that verifies for this very field.
 */
HeapTuple
crm_crypt_row(Relation rel, HeapTuple newtup, HeapTuple oldtup, bool is_principal, Bitmapset **changed)
{
	CryptRel   *cr = crypt_rel_by_oid(RelationGetRelid(rel));
	TupleDesc	desc = RelationGetDescr(rel);
	int		   *cols;
	Datum	   *vals;
	bool	   *nulls;
	int			ncols = 0;
	const char *subject = NULL;
	int64		customer_id = 0;
	SubjectEntry *se = NULL;

	*changed = NULL;
	if (cr->nfields == 0)
		return newtup;
	/* per field: at most its value twice (kept, then moved to another key) and its blind index */
	cols = palloc(sizeof(int) * cr->nfields * 3);
	vals = palloc(sizeof(Datum) * cr->nfields * 3);
	nulls = palloc(sizeof(bool) * cr->nfields * 3);

	for (int i = 0; i < cr->nfields; i++)
	{
		CryptField *f = &cr->fields[i];
		bool		nnull, onull = true;
		Datum		nv;
		Datum		ov = (Datum) 0;
		text	   *plain = NULL;	/* the new plaintext, when it is to be encrypted */
		bool		keep = false;	/* the stored value stays as it is */
		bool		is_changed;
		text	   *stored = NULL;

		/* the column of a field as the relation has it now (the cache is dropped when it changes) */
		if (!crm_attnum_valid(desc, f->attnum, f->name, TEXTOID))
			continue;
		nv = heap_getattr(newtup, f->attnum, desc, &nnull);
		if (oldtup)
			ov = heap_getattr(oldtup, f->attnum, desc, &onull);
		if (nnull)
		{
			is_changed = !onull;
			keep = true;
		}
		else if (!onull && VARSIZE_ANY_EXHDR(DatumGetTextPP(nv)) == VARSIZE_ANY_EXHDR(DatumGetTextPP(ov)) &&
				 memcmp(VARDATA_ANY(DatumGetTextPP(nv)), VARDATA_ANY(DatumGetTextPP(ov)),
						VARSIZE_ANY_EXHDR(DatumGetTextPP(ov))) == 0)
		{
			/* the stored value itself, unchanged (an UPDATE of other fields) */
			is_changed = false;
			keep = true;
			stored = DatumGetTextPP(ov);
		}
		else
		{
			text	   *nt = DatumGetTextPP(nv);
			bool		erased;

			if (!is_principal && ciphertext_dkid(VARDATA_ANY(nt), VARSIZE_ANY_EXHDR(nt), NULL, NULL) != 0)
			{
				/* a restore writes ciphertext: accept it when it verifies for this field */
				(void) decrypt_value(nt, cr->object, f->name, &erased);
				is_changed = true;
				keep = true;
				stored = nt;
			}
			else
			{
				plain = nt;
				is_changed = true;
				if (!onull)
				{
					text	   *old_plain = decrypt_value(DatumGetTextPP(ov), cr->object, f->name, &erased);

					if (!erased && VARSIZE_ANY_EXHDR(old_plain) == VARSIZE_ANY_EXHDR(nt) &&
						memcmp(VARDATA_ANY(old_plain), VARDATA_ANY(nt), VARSIZE_ANY_EXHDR(nt)) == 0)
					{
						/* the same plaintext again: keep the stored value */
						is_changed = false;
						keep = true;
						plain = NULL;
						stored = DatumGetTextPP(ov);
						cols[ncols] = f->attnum;
						vals[ncols] = ov;
						nulls[ncols] = false;
						ncols++;
					}
				}
			}
		}
		if (is_changed)
			*changed = bms_add_member(*changed, f->attnum);

		if (plain != NULL)
		{
			validate_plain(cr, f, rel, newtup, VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain));
			if (subject == NULL)
			{
				subject = row_subject(cr, rel, newtup, &customer_id);
				se = subject_key(subject, customer_id, true);
			}
			if (se->erased)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("cannot store a new value in encrypted field %s.%s: its key was shredded",
								crm_short(cr->object), crm_short(f->name)),
						 errdetail("The record belongs to %s, forgotten by crm.forget_subject().", crm_shortn(subject, 256))));
			cols[ncols] = f->attnum;
			vals[ncols] = PointerGetDatum(encrypt_value(se->dkid, data_key(se->dkid)->key, cr->object, f->name,
														VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain)));
			nulls[ncols] = false;
			ncols++;
		}
		else if (keep && stored != NULL && oldtup != NULL && !is_changed)
		{
			/* an unchanged value of a record that moved to another customer follows it to its key */
			int64		cur = ciphertext_dkid(VARDATA_ANY(stored), VARSIZE_ANY_EXHDR(stored), NULL, NULL);

			if (subject == NULL && cr->parent_attnum > 0 &&
				crm_attnum_valid(desc, cr->parent_attnum, cr->parent_name, INT8OID))
			{
				bool		n1, n2;
				Datum		a = heap_getattr(newtup, cr->parent_attnum, desc, &n1);
				Datum		b = heap_getattr(oldtup, cr->parent_attnum, desc, &n2);

				if (n1 != n2 || (!n1 && DatumGetInt64(a) != DatumGetInt64(b)))
				{
					subject = row_subject(cr, rel, newtup, &customer_id);
					se = subject_key(subject, customer_id, true);
				}
			}
			if (se != NULL && cur != se->dkid && !se->erased)
			{
				bool		erased;
				text	   *p = decrypt_value(stored, cr->object, f->name, &erased);

				if (!erased)
				{
					cols[ncols] = f->attnum;
					vals[ncols] = PointerGetDatum(encrypt_value(se->dkid, data_key(se->dkid)->key, cr->object,
																f->name, VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p)));
					nulls[ncols] = false;
					ncols++;
				}
			}
		}

		/* the blind index follows the plaintext; whatever else was written there is replaced */
		if (f->bidx_attnum > 0 && crm_attnum_valid(desc, f->bidx_attnum, f->bidx_name, BYTEAOID))
		{
			bool		bnull, obnull = true;
			Datum		bv = heap_getattr(newtup, f->bidx_attnum, desc, &bnull);
			Datum		obv = oldtup ? heap_getattr(oldtup, f->bidx_attnum, desc, &obnull) : (Datum) 0;
			bool		bidx_intact = oldtup != NULL && bnull == obnull &&
				(bnull || datumIsEqual(bv, obv, false, -1));

			if (plain != NULL)
			{
				bidx_unique_check(rel, cr, f, newtup, VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain));
				cols[ncols] = f->bidx_attnum;
				vals[ncols] = PointerGetDatum(blind_index(cr->object, f, VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain)));
				nulls[ncols] = false;
				ncols++;
			}
			else if (nnull)
			{
				cols[ncols] = f->bidx_attnum;
				vals[ncols] = (Datum) 0;
				nulls[ncols] = true;
				ncols++;
			}
			else if (!(is_changed == false && bidx_intact))
			{
				bool		erased;
				text	   *p = decrypt_value(stored ? stored : DatumGetTextPP(nv), cr->object, f->name, &erased);

				cols[ncols] = f->bidx_attnum;
				if (erased)
				{
					vals[ncols] = (Datum) 0;
					nulls[ncols] = true;
				}
				else
				{
					vals[ncols] = PointerGetDatum(blind_index(cr->object, f, VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p)));
					nulls[ncols] = false;
				}
				ncols++;
			}
		}
	}
	if (ncols == 0)
		return newtup;
	return heap_modify_tuple_by_cols(newtup, desc, ncols, cols, vals, nulls);
}

/* The plaintext of a stored value (for the audit log's keyed hash); "[erased]" once shredded. */
char *
crm_crypt_plaintext(Relation rel, const char *field, struct varlena *stored)
{
	bool		erased;
	text	   *p = decrypt_value((text *) pg_detoast_datum_packed(stored), RelationGetRelationName(rel), field, &erased);

	return erased ? pstrdup(ERASED_MARKER) : text_to_cstring(p);
}

/* --- SQL functions ---------------------------------------------------------------------------------- */

/*
 * crm._decrypt(value text, object text, field text, owner bigint) returns text
 * What the masking hook reads an encrypted field through: the plaintext, its mask or NULL, as the
 * acting principal's level for this field on this record says; "[erased]" once its key is shredded.
 */
typedef struct DecryptCache
{
	Oid			relid;
	int64		principal;
	uint64		generation;
	int			rank;
	int			own_rank;
	text	   *mask;
	char		object[NAMEDATALEN];
	char		field[NAMEDATALEN];
} DecryptCache;

/*
 * Was this call made by the masking hook? Its calls carry COERCE_IMPLICIT_CAST, which no call a user
 * writes can have (that would take a cast from text to text, which only a superuser could make).
 */
static bool
crm_decrypt_from_hook(FunctionCallInfo fcinfo)
{
	Node	   *e = fcinfo->flinfo ? fcinfo->flinfo->fn_expr : NULL;

	return e != NULL && IsA(e, FuncExpr) && ((FuncExpr *) e)->funcformat == COERCE_IMPLICIT_CAST;
}

PG_FUNCTION_INFO_V1(crm_decrypt);
Datum
crm_decrypt(PG_FUNCTION_ARGS)
{
	DecryptCache *c = (DecryptCache *) fcinfo->flinfo->fn_extra;
	char	   *object, *field;
	bool		found;
	int64		principal;
	int			rank;
	bool		erased;
	text	   *plain;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	principal = crm_current_principal(&found);
	if (!found)
	{
		/* no principal: the maintenance role sees ciphertext; only a superuser may decrypt by hand */
		if (!superuser())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to decrypt field values"),
					 errdetail("Only principals (through their field levels) and superusers read encrypted fields.")));
		principal = -1;
	}
	object = text_to_cstring(PG_GETARG_TEXT_PP(1));
	field = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (c == NULL)
		c = fcinfo->flinfo->fn_extra = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(DecryptCache));
	if (principal >= 0 &&
		(c->generation != crm_levels_generation || c->principal != principal ||
		 strcmp(c->object, object) != 0 || strcmp(c->field, field) != 0 || !OidIsValid(c->relid)))
	{
		Oid			relid = data_relid(object);
		Relation	rel = table_open(relid, AccessShareLock);
		CrmFieldLevels *lv = crm_field_levels(principal, rel);
		MemoryContext old;

		/* fail closed: a field that is not (now) an encrypted field of the object shows nothing */
		c->rank = c->own_rank = 0;
		if (c->mask)
			pfree(c->mask);
		c->mask = NULL;
		for (int i = 0; i < lv->nfields; i++)
			if (strcmp(lv->fields[i].name, field) == 0 && lv->fields[i].kind == CRM_FIELD_ENCRYPTED)
			{
				c->rank = lv->fields[i].rank;
				c->own_rank = lv->fields[i].own_rank;
				old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
				c->mask = cstring_to_text(lv->fields[i].mask);
				MemoryContextSwitchTo(old);
			}
		table_close(rel, AccessShareLock);
		c->relid = relid;
		c->principal = principal;
		c->generation = crm_levels_generation;
		strlcpy(c->object, object, NAMEDATALEN);
		strlcpy(c->field, field, NAMEDATALEN);
	}
	if (principal < 0)
		rank = 3;
	else if (!PG_ARGISNULL(3) && PG_GETARG_INT64(3) == principal && crm_decrypt_from_hook(fcinfo))
		rank = c->own_rank;
	else
		rank = c->rank;			/* called by hand, the owner argument proves nothing */
	if (rank == 0)
		PG_RETURN_NULL();
	plain = decrypt_value(PG_GETARG_TEXT_PP(0), object, field, &erased);
	if (erased)
		PG_RETURN_TEXT_P(cstring_to_text(ERASED_MARKER));
	if (rank == 1)
		return DirectFunctionCall2(crm_mask, PointerGetDatum(plain), PointerGetDatum(c->mask));
	PG_RETURN_TEXT_P(plain);
}

/*
 * crm.check_encrypted(object text, field text, value text) returns boolean
 * The CHECK constraint of an encrypted column: only ciphertext is ever stored.
 */
PG_FUNCTION_INFO_V1(crm_check_encrypted);
Datum
crm_check_encrypted(PG_FUNCTION_ARGS)
{
	text	   *v;

	crm_require_arg(fcinfo, 0, "crm.check_encrypted", "object");
	crm_require_arg(fcinfo, 1, "crm.check_encrypted", "field");
	if (PG_ARGISNULL(2))
		PG_RETURN_BOOL(true);
	v = PG_GETARG_TEXT_PP(2);
	if (ciphertext_dkid(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), NULL, NULL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("field %s.%s is encrypted: it stores only ciphertext",
						crm_short(text_to_cstring(PG_GETARG_TEXT_PP(0))), crm_short(text_to_cstring(PG_GETARG_TEXT_PP(1)))),
				 errdetail("A plaintext value reached the table without passing crm's write trigger.")));
	PG_RETURN_BOOL(true);
}

/* the field of an object that has a blind index, or an error saying it has none */
static CryptField *
searchable_field(const char *object, const char *field)
{
	CryptField *f = crypt_field(crypt_rel_by_oid(data_relid(object)), field);

	if (f == NULL || f->bidx_attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("field %s.%s has no blind index", crm_short(object), crm_short(field)),
				 errhint("Only encrypted fields added with \"searchable\": true have one.")));
	return f;
}

/* crm._blind_index(object text, field text, value text) returns bytea (not granted) */
PG_FUNCTION_INFO_V1(crm_blind_index);
Datum
crm_blind_index(PG_FUNCTION_ARGS)
{
	char	   *object;
	CryptField *f;
	text	   *v;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	f = searchable_field(object, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	v = PG_GETARG_TEXT_PP(2);
	PG_RETURN_BYTEA_P(blind_index(object, f, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v)));
}

/*
 * crm._bidx_lookup(object text, field text, value text) returns setof bigint
 * The records the caller may read whose blind index of field matches value, in id order. The query
 * runs as the caller (row security and field levels apply: a reader who may not read the field
 * finds nothing by it), and the keyed hash never leaves C: crm._blind_index, which returns it, is
 * not granted, since a raw blind index is an equality oracle for anyone holding one from elsewhere.
 */
PG_FUNCTION_INFO_V1(crm_bidx_lookup);
Datum
crm_bidx_lookup(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *object, *field;
	CryptField *f;
	text	   *v;
	Oid			types[1] = {BYTEAARRAYOID};
	Datum		vals[1];
	Datum		hashes[CRM_BIDX_MAX_KEYS];
	int			nh = 0;
	const char *const *subjects;
	int			nsub;
	char	   *sql;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("object, field and value must not be NULL")));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	field = text_to_cstring(PG_GETARG_TEXT_PP(1));
	f = searchable_field(object, field);
	v = PG_GETARG_TEXT_PP(2);
	/* under every blind-index key in use: a rotation's rebuild may not have reached the record */
	nsub = crm_bidx_subjects(&subjects);
	for (int i = 0; i < nsub; i++)
	{
		bytea	   *h = blind_index_under(subjects[i], i == 0, object, f, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));

		if (h != NULL)
			hashes[nh++] = PointerGetDatum(h);
	}
	vals[0] = PointerGetDatum(construct_array(hashes, nh, BYTEAOID, -1, false, TYPALIGN_INT));
	sql = psprintf("SELECT t.id FROM crm_data.%s t WHERE t.%s OPERATOR(pg_catalog.=) ANY ($1) ORDER BY t.id",
				   quote_identifier(object), quote_identifier(psprintf("crm_bidx_%s", field)));
	SPI_connect();
	if (SPI_execute_with_args(sql, 1, types, vals, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "crm: blind index lookup failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
	}
	SPI_finish();
	return (Datum) 0;
}

/* crm.rotate_master_key() returns bigint: re-wraps every data key under the current master key */
PG_FUNCTION_INFO_V1(crm_rotate_master_key);
Datum
crm_rotate_master_key(PG_FUNCTION_ARGS)
{
	CrmUserSwitch sw;
	volatile int64 n = 0;
	MasterKey  *cur;

	keyring_require();
	cur = &mkeys[n_mkeys - 1];
	crm_watch_catalogs();
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			t1[1] = {TEXTOID};
		Datum		v1[1] = {CStringGetTextDatum(cur->id)};
		SPITupleTable *tt;
		uint64		rows;

		SPI_connect();
		if (SPI_execute_with_args("SELECT d.id, d.master_key_id, d.wrapped FROM crm.data_key d"
								  " WHERE d.wrapped IS NOT NULL AND d.master_key_id OPERATOR(pg_catalog.<>) $1"
								  " ORDER BY d.id FOR UPDATE",
								  1, t1, v1, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "crm data key scan failed");
		tt = SPI_tuptable;
		rows = SPI_processed;
		for (uint64 i = 0; i < rows; i++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			char	   *mkid = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
			bytea	   *w = DatumGetByteaPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
			uint8		dk[DK_LEN];
			Oid			t3[3] = {INT8OID, TEXTOID, BYTEAOID};
			Datum		v3[3];

			unwrap_key(id, mkid, w, dk);
			v3[0] = Int64GetDatum(id);
			v3[1] = CStringGetTextDatum(cur->id);
			v3[2] = PointerGetDatum(wrap_key(cur, id, dk));
			explicit_bzero(dk, DK_LEN);
			if (SPI_execute_with_args("UPDATE crm.data_key SET master_key_id = $2, wrapped = $3, rotated_at = pg_catalog.now()"
									  " WHERE id OPERATOR(pg_catalog.=) $1",
									  3, t3, v3, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "crm data key update failed");
			n++;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	PG_RETURN_INT64(n);
}

/* fingerprints of keys shredded in this transaction, written beside the key file at commit */
typedef struct PendingShred
{
	uint8		fp[FP_LEN];
	int64		dkid;
	int			nest_level;
} PendingShred;
static List *pending_shreds = NIL;	/* TopMemoryContext */
static bool xact_callbacks = false;

static void
write_shreds(void)
{
	char	   *path = shred_path();
	int			fd;
	StringInfoData b;
	ListCell   *lc;

	initStringInfo(&b);
	foreach(lc, pending_shreds)
	{
		PendingShred *p = lfirst(lc);

		for (int i = 0; i < FP_LEN; i++)
			appendStringInfo(&b, "%02x", p->fp[i]);
		appendStringInfo(&b, " data key %lld shredded %s\n", (long long) p->dkid,
						 timestamptz_to_str(GetCurrentTransactionStartTimestamp()));
	}
	fd = OpenTransientFilePerm(path, O_WRONLY | O_CREAT | O_APPEND | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open crm shredded-key list \"%s\": %m", path),
				 errhint("The directory of the key file must be writable by the server to forget a subject.")));
	if (write(fd, b.data, b.len) != b.len || pg_fsync(fd) != 0)
	{
		int			save = errno;

		CloseTransientFile(fd);
		errno = save;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write crm shredded-key list \"%s\": %m", path)));
	}
	CloseTransientFile(fd);
}

static void
clear_pending(void)
{
	list_free_deep(pending_shreds);
	pending_shreds = NIL;
}

static void
shred_xact_callback(XactEvent event, void *arg)
{
	if (pending_shreds == NIL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			write_shreds();
			clear_pending();
			break;
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot PREPARE a transaction that has forgotten a subject")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			clear_pending();
			break;
		default:
			break;
	}
}

static void
shred_subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && pending_shreds != NIL)
	{
		int			level = GetCurrentTransactionNestLevel();
		List	   *keep = NIL;
		ListCell   *lc;
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		foreach(lc, pending_shreds)
		{
			PendingShred *p = lfirst(lc);

			if (p->nest_level < level)
				keep = lappend(keep, p);
			else
				pfree(p);
		}
		list_free(pending_shreds);
		pending_shreds = keep;
		MemoryContextSwitchTo(old);
	}
}

/*
 * crm._shred_subject(customer_id bigint, reason text, principal bigint) returns boolean
 * Destroys a customer's data key (true when there was one to destroy). Called by
 * crm.forget_subject(), which checks who may.
 */
PG_FUNCTION_INFO_V1(crm_shred_subject);
Datum
crm_shred_subject(PG_FUNCTION_ARGS)
{
	int64		customer;
	text	   *reason;
	char	   *subject;
	CrmUserSwitch sw;
	volatile bool destroyed = false;
	uint8		fp[FP_LEN];
	volatile int64 dkid = 0;

	crm_require_arg(fcinfo, 0, "crm._shred_subject", "customer_id");
	crm_require_arg(fcinfo, 1, "crm._shred_subject", "reason");
	customer = PG_GETARG_INT64(0);
	reason = PG_GETARG_TEXT_PP(1);
	subject = psprintf("customer:%lld", (long long) customer);
	keyring_require();
	if (!xact_callbacks)
	{
		RegisterXactCallback(shred_xact_callback, NULL);
		RegisterSubXactCallback(shred_subxact_callback, NULL);
		xact_callbacks = true;
	}
	crm_watch_catalogs();
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		Oid			t1[1] = {TEXTOID};
		Datum		v1[1] = {CStringGetTextDatum(subject)};
		Oid			t4[4] = {TEXTOID, INT8OID, TEXTOID, INT8OID};
		Datum		v4[4];
		char		n4[4] = {' ', ' ', ' ', PG_ARGISNULL(2) ? 'n' : ' '};

		SPI_connect();
		if (SPI_execute_with_args("SELECT d.id, d.master_key_id, d.wrapped FROM crm.data_key d"
								  " WHERE d.subject OPERATOR(pg_catalog.=) $1 FOR UPDATE",
								  1, t1, v1, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "crm data key lookup failed");
		if (SPI_processed == 1)
		{
			bool		isnull;
			Datum		w;

			dkid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			w = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
			if (!isnull)
			{
				uint8		dk[DK_LEN];

				unwrap_key(dkid, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
						   DatumGetByteaPP(w), dk);
				fingerprint(dk, fp);
				explicit_bzero(dk, DK_LEN);
				destroyed = true;
			}
		}
		v4[0] = CStringGetTextDatum(subject);
		v4[1] = Int64GetDatum(customer);
		v4[2] = PointerGetDatum(reason);
		v4[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
		/* a customer with no key yet gets a tombstone: no encrypted value can be stored for it later */
		if (SPI_execute_with_args("INSERT INTO crm.data_key AS d (subject, customer_id, master_key_id, wrapped, shredded_at, shred_reason, shredded_by)"
								  " VALUES ($1, $2, '', NULL, pg_catalog.now(), $3, $4)"
								  " ON CONFLICT (subject) DO UPDATE SET wrapped = NULL, shredded_at = pg_catalog.now(), shred_reason = excluded.shred_reason,"
								  " shredded_by = excluded.shredded_by"
								  " WHERE d.wrapped IS NOT NULL",
								  4, t4, v4, n4, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "crm data key shred failed");
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	if (destroyed)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		PendingShred *p = palloc(sizeof(PendingShred));

		memcpy(p->fp, fp, FP_LEN);
		p->dkid = dkid;
		p->nest_level = GetCurrentTransactionNestLevel();
		pending_shreds = lappend(pending_shreds, p);
		MemoryContextSwitchTo(old);
	}
	dk_cache_reset();
	PG_RETURN_BOOL(destroyed);
}

/*
 * crm.keyring_status() returns table (setting text, ok boolean, current_key text, keys integer,
 *   shredded_keys integer, problem text)
 * For admins and the compliance report: is the keyring usable? Never shows key material.
 */
PG_FUNCTION_INFO_V1(crm_keyring_status);
Datum
crm_keyring_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		v[6];
	bool		n[6] = {false, false, true, false, false, true};
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	v[0] = CStringGetTextDatum(crm_keyring ? crm_keyring : "");
	v[1] = BoolGetDatum(false);
	v[3] = Int32GetDatum(0);
	v[4] = Int32GetDatum(0);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		checked_lxid = InvalidLocalTransactionId;
		keyring_require();
		v[1] = BoolGetDatum(true);
		v[2] = CStringGetTextDatum(mkeys[n_mkeys - 1].id);
		n[2] = false;
		v[3] = Int32GetDatum(n_mkeys);
		v[4] = Int32GetDatum(n_shredded);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		v[5] = CStringGetTextDatum(ed->message);
		n[5] = false;
		FreeErrorData(ed);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, v, n)));
}

/* --- keys for other modules (auditkeys.c): derived here, so no raw key leaves this file --------------- */

/* Load the keyring; returns how many master keys it holds (the last is current). */
int
crm_keyring_count(void)
{
	keyring_require();
	return n_mkeys;
}

const char *
crm_keyring_key_id(int i)
{
	Assert(i >= 0 && i < n_mkeys);
	return mkeys[i].id;
}

/* HKDF-SHA256 (RFC 5869) of master key i, salt "crm keyring v1", info label: 32 bytes */
void
crm_keyring_derive(int i, const char *label, uint8 *out)
{
	const void *parts[2] = {label, "\x01"};
	size_t		lens[2] = {strlen(label), 1};

	Assert(i >= 0 && i < n_mkeys);
	hmac_parts(mkeys[i].prk, 32, 2, parts, lens, out);
}

/* the legacy audit key of a migrated 0.1 database, when the keyring holds one */
bool
crm_keyring_legacy_audit(uint8 *out)
{
	keyring_require();
	if (have_legacy_audit)
		memcpy(out, legacy_audit, MK_LEN);
	return have_legacy_audit;
}

/* Make the data key of a subject if it has none (a write needs it); a shredded one stays shredded. */
void
crm_subject_key_make(const char *subject, int64 customer_id)
{
	if (strlen(subject) >= SUBJECT_LEN)
		elog(ERROR, "crm subject name too long");
	(void) subject_key(subject, customer_id, true);
}

/*
 * HMAC(data key, label) of a stored data key row: false when the key is shredded (listed in the
 * shredded-key file). A missing master key or a key that does not unwrap is an error.
 */
bool
crm_data_key_secret(int64 dkid, const char *mkid, bytea *wrapped, const char *label, uint8 *out)
{
	uint8		dk[DK_LEN];
	uint8		fp[FP_LEN];
	bool		ok;

	keyring_require();
	unwrap_key(dkid, mkid, wrapped, dk);
	fingerprint(dk, fp);
	ok = !is_shredded(fp);
	if (ok)
		hmac1(dk, DK_LEN, label, strlen(label), out);
	explicit_bzero(dk, DK_LEN);
	return ok;
}

void
crm_crypt_init(void)
{
	DefineCustomStringVariable("crm.keyring",
							   "Path of the file holding crm's master keys (one \"<id> <64 hex digits>\" per line; the last is current).",
							   "Encrypted fields need it. Keep the file outside the data directory, readable only by the server.",
							   &crm_keyring,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
}
