/*
 * sha256.c — SHA-256 and HMAC-SHA256 (RFC 2104) for the per-row paths.
 *
 * PostgreSQL's pg_cryptohash/pg_hmac go through OpenSSL's EVP layer: every call allocates a context,
 * registers it with the resource owner and fetches the algorithm, which costs several times the
 * hashing itself for the short inputs crm hashes per row (audit values, chain links, blind indexes).
 * Here the context is a plain struct on the stack (OpenSSL's SHA-256 block function, which uses the
 * CPU's SHA instructions where it has them), and an HMAC key is prepared once, its inner and outer
 * pads already compressed, so one HMAC of a short value is two block compressions.
 */
#define OPENSSL_SUPPRESS_DEPRECATED		/* SHA256_Init & co.: the only API with a copyable state */
#include "postgres.h"

#include <openssl/sha.h>

#include "crm.h"

StaticAssertDecl(sizeof(SHA256_CTX) <= sizeof(CrmSha256), "CrmSha256 must hold a SHA256_CTX");

#define CTX(c) ((SHA256_CTX *) (c)->opaque)

void
crm_sha256_init(CrmSha256 *c)
{
	if (SHA256_Init(CTX(c)) != 1)
		elog(ERROR, "SHA-256 failed");
}

void
crm_sha256_update(CrmSha256 *c, const void *data, size_t len)
{
	if (len > 0 && SHA256_Update(CTX(c), data, len) != 1)
		elog(ERROR, "SHA-256 failed");
}

void
crm_sha256_final(CrmSha256 *c, uint8 *out)
{
	if (SHA256_Final(out, CTX(c)) != 1)
		elog(ERROR, "SHA-256 failed");
}

void
crm_sha256(const void *data, size_t len, uint8 *out)
{
	CrmSha256	c;

	crm_sha256_init(&c);
	crm_sha256_update(&c, data, len);
	crm_sha256_final(&c, out);
}

/* prepare a key: its inner and outer pads compressed once */
void
crm_hmac_key(CrmHmacKey *k, const uint8 *key, size_t len)
{
	uint8		block[64];

	memset(block, 0, sizeof(block));
	if (len > 64)
		crm_sha256(key, len, block);
	else
		memcpy(block, key, len);
	for (int i = 0; i < 64; i++)
		block[i] ^= 0x36;
	crm_sha256_init(&k->inner);
	crm_sha256_update(&k->inner, block, 64);
	for (int i = 0; i < 64; i++)
		block[i] ^= 0x36 ^ 0x5c;
	crm_sha256_init(&k->outer);
	crm_sha256_update(&k->outer, block, 64);
	explicit_bzero(block, sizeof(block));
}

void
crm_hmac_start(const CrmHmacKey *k, CrmSha256 *c)
{
	*c = k->inner;
}

void
crm_hmac_finish(const CrmHmacKey *k, CrmSha256 *c, uint8 *out)
{
	uint8		inner[32];

	crm_sha256_final(c, inner);
	*c = k->outer;
	crm_sha256_update(c, inner, 32);
	crm_sha256_final(c, out);
	explicit_bzero(inner, sizeof(inner));
}
