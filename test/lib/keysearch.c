/*
 * keysearch: does any byte string in a dump work as a key against values crm protects?
 * Used by test/dump_keys.sh (compiled there with: cc -O2 keysearch.c -lcrypto).
 *
 *   keysearch TARGETS [--keyring KEYFILE --wrapped WRAPPED] FILE...
 *
 * TARGETS: one line per known protected value: "<label> H <hex message> <hex expected>" (HMAC-SHA256
 * of the message, truncated to the expected length: blind indexes, audit hashes) or "<label> A <hex
 * iv|first ciphertext block> <hex first plaintext block>" (AES-CBC: an encrypted field's value), or
 * "<label> W <hex wrapped data key> 00" (a 32-byte master key, or the wrapping key derived from it,
 * that unwraps it).
 * Candidates from the dump: every window of lengths 16, 24, 32, 48 and 64 bytes at every offset
 * of each FILE (raw dumps, and the hex / base64 tokens decoded from them). Candidates from the key
 * file (--keyring): each master key, the keys crm derives from it, and every data key that unwraps
 * with it from WRAPPED (128-byte wrapped keys found in the dump, one after another).
 * Prints one line per source and label: "<dump|keyring> <label> match|none", and the counts.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/aes.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXT 64
typedef struct
{
	char		label[64];
	char		kind;
	unsigned char msg[256];
	size_t		msglen;
	unsigned char want[64];
	size_t		wantlen;
	int			hit[2];			/* by source: 0 dump, 1 keyring */
} Target;
static Target t[MAXT];
static int	nt = 0;
static long long tried[2];

static int
unhex(const char *s, unsigned char *out, size_t max)
{
	size_t		n = strlen(s);

	if (n % 2 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++)
	{
		unsigned int b;

		if (sscanf(s + 2 * i, "%2x", &b) != 1)
			return -1;
		out[i] = (unsigned char) b;
	}
	return (int) (n / 2);
}

static void
hmac(const unsigned char *key, size_t klen, const unsigned char *msg, size_t mlen, unsigned char *out)
{
	unsigned char k[64] = {0}, pad[64], inner[32];
	SHA256_CTX	c;

	if (klen > 64)
	{
		SHA256(key, klen, k);
		klen = 32;
	}
	else
		memcpy(k, key, klen);
	for (int i = 0; i < 64; i++)
		pad[i] = k[i] ^ 0x36;
	SHA256_Init(&c);
	SHA256_Update(&c, pad, 64);
	SHA256_Update(&c, msg, mlen);
	SHA256_Final(inner, &c);
	for (int i = 0; i < 64; i++)
		pad[i] = k[i] ^ 0x5c;
	SHA256_Init(&c);
	SHA256_Update(&c, pad, 64);
	SHA256_Update(&c, inner, 32);
	SHA256_Final(out, &c);
}

/* Does enc unwrap this wrapped data key (iv | AES-256-CBC of 64 bytes + a block of padding | HMAC)? */
static int
unwraps(const unsigned char *enc, const unsigned char *w)
{
	AES_KEY		k;
	unsigned char iv[16], last[16];

	/* CBC: the last block's plaintext is D(c[last]) xor c[last - 1]; a right key gives 16 x 0x10 */
	AES_set_decrypt_key(enc, 256, &k);
	AES_decrypt(w + 16 + 64, last, &k);
	memcpy(iv, w + 16 + 48, 16);
	for (int i = 0; i < 16; i++)
		if ((last[i] ^ iv[i]) != 16)
			return 0;
	return 1;
}

/* one candidate key against every target */
static void
try_key(int src, const unsigned char *key, size_t klen)
{
	unsigned char ipad[64] = {0}, opad[64] = {0};
	SHA256_CTX	ci, co;
	int			have_hmac = 0;

	tried[src]++;
	for (int i = 0; i < nt; i++)
	{
		Target	   *x = &t[i];

		if (x->kind == 'H')
		{
			unsigned char inner[32], out[32];
			SHA256_CTX	c;

			if (!have_hmac)
			{
				memcpy(ipad, key, klen);	/* klen <= 64 */
				memcpy(opad, key, klen);
				for (int j = 0; j < 64; j++)
				{
					ipad[j] ^= 0x36;
					opad[j] ^= 0x5c;
				}
				SHA256_Init(&ci);
				SHA256_Update(&ci, ipad, 64);
				SHA256_Init(&co);
				SHA256_Update(&co, opad, 64);
				have_hmac = 1;
			}
			c = ci;
			SHA256_Update(&c, x->msg, x->msglen);
			SHA256_Final(inner, &c);
			c = co;
			SHA256_Update(&c, inner, 32);
			SHA256_Final(out, &c);
			if (memcmp(out, x->want, x->wantlen) == 0)
				x->hit[src]++;
		}
		else if (x->kind == 'W' && klen == 32)
		{
			/* a master key (or the wrapping key crm derives from it) that unwraps a wrapped data key */
			unsigned char enc[32];

			hmac(key, 32, (const unsigned char *) "crm wrap enc", 12, enc);
			if (unwraps(enc, x->msg) || unwraps(key, x->msg))
				x->hit[src]++;
		}
		else if (x->kind == 'A' && (klen == 16 || klen == 24 || klen == 32))
		{
			AES_KEY		ak;
			unsigned char pt[16];

			AES_set_decrypt_key(key, (int) klen * 8, &ak);
			AES_decrypt(x->msg + 16, pt, &ak);
			for (int j = 0; j < 16; j++)
				pt[j] ^= x->msg[j];
			if (memcmp(pt, x->want, 16) == 0)
				x->hit[src]++;
		}
	}
}

static unsigned char *
slurp(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	unsigned char *buf;
	long		n;

	if (f == NULL)
	{
		perror(path);
		exit(2);
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n + 1);
	if (buf == NULL || fread(buf, 1, n, f) != (size_t) n)
	{
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	*len = (size_t) n;
	return buf;
}

/*
 * The audit-hash key crm derives (src/auditkeys.c) for a subject from master key raw and the
 * subject's unwrapped 64-byte data key dk:
 *   A = HKDF-SHA256(raw, salt "crm keyring v1", info "crm audit v1"), S = HMAC(dk, "crm audit subject v1"),
 *   K = HMAC(A, S). Change it here (and nowhere else) when crm's derivation changes.
 */
static void
audit_key_for(const unsigned char *raw, const unsigned char *dk, unsigned char *out)
{
	unsigned char prk[32], a[32], sub[32];
	unsigned char info[64];
	size_t		n = strlen("crm audit v1");

	hmac((const unsigned char *) "crm keyring v1", 14, raw, 32, prk);
	memcpy(info, "crm audit v1", n);
	info[n] = 0x01;
	hmac(prk, 32, info, n + 1, a);
	hmac(dk, 64, (const unsigned char *) "crm audit subject v1", strlen("crm audit subject v1"), sub);
	hmac(a, 32, sub, 32, out);
}

/* the key file's keys, as crm derives them, and the data keys they unwrap */
static void
keyring_candidates(const char *keyfile, const char *wrappedfile)
{
	size_t		klen, wlen;
	char	   *keys = (char *) slurp(keyfile, &klen);
	unsigned char *w = slurp(wrappedfile, &wlen);
	char	   *line, *save = NULL;

	keys[klen] = '\0';
	for (line = strtok_r(keys, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		char		id[128], hex[129];
		unsigned char raw[32], enc[32], mac[32], ak[32];

		if (line[0] == '#' || sscanf(line, "%127s %128s", id, hex) != 2 || unhex(hex, raw, 32) != 32)
			continue;
		hmac(raw, 32, (const unsigned char *) "crm wrap enc", 12, enc);
		hmac(raw, 32, (const unsigned char *) "crm wrap mac", 12, mac);
		try_key(1, raw, 32);
		try_key(1, enc, 32);
		try_key(1, mac, 32);
		/* wrapped data key: iv (16) | AES-256-CBC of the 64-byte key, padded (80) | HMAC (32) */
		for (size_t off = 0; off + 128 <= wlen; off += 128)
		{
			AES_KEY		dk_key;
			unsigned char iv[16], dk[80];

			memcpy(iv, w + off, 16);
			AES_set_decrypt_key(enc, 256, &dk_key);
			AES_cbc_encrypt(w + off + 16, dk, 80, &dk_key, iv, AES_DECRYPT);
			if (dk[79] != 16 || dk[64] != 16)
				continue;		/* not wrapped by this key */
			try_key(1, dk, 32);
			try_key(1, dk + 32, 32);
			try_key(1, dk, 64);
			audit_key_for(raw, dk, ak);
			try_key(1, ak, 32);
		}
	}
}

int
main(int argc, char **argv)
{
	static const size_t lens[] = {16, 24, 32, 48, 64};
	FILE	   *tf;
	char		line[2048];
	int			a = 2;
	const char *keyfile = NULL, *wrapped = NULL;

	if (argc < 3)
	{
		fprintf(stderr, "usage: keysearch TARGETS [--keyring KEYFILE --wrapped WRAPPED] FILE...\n");
		return 2;
	}
	tf = fopen(argv[1], "r");
	if (tf == NULL)
	{
		perror(argv[1]);
		return 2;
	}
	while (fgets(line, sizeof(line), tf) && nt < MAXT)
	{
		char		hm[600], hw[200];
		Target	   *x = &t[nt];
		int			m, w;

		if (sscanf(line, "%63s %c %599s %199s", x->label, &x->kind, hm, hw) != 4)
			continue;
		m = unhex(hm, x->msg, sizeof(x->msg));
		w = unhex(hw, x->want, sizeof(x->want));
		if (m < 0 || w < 1 || (x->kind == 'A' && (m != 32 || w != 16)) || (x->kind == 'W' && m != 128))
		{
			fprintf(stderr, "bad target line: %s", line);
			return 2;
		}
		x->msglen = m;
		x->wantlen = w;
		nt++;
	}
	fclose(tf);
	if (a + 1 < argc && strcmp(argv[a], "--keyring") == 0)
	{
		keyfile = argv[a + 1];
		a += 2;
		if (a + 1 < argc && strcmp(argv[a], "--wrapped") == 0)
		{
			wrapped = argv[a + 1];
			a += 2;
		}
	}
	for (; a < argc; a++)
	{
		size_t		n;
		unsigned char *buf = slurp(argv[a], &n);

		for (size_t off = 0; off < n; off++)
			for (int l = 0; l < 5; l++)
				if (off + lens[l] <= n)
					try_key(0, buf + off, lens[l]);
		free(buf);
	}
	if (keyfile)
		keyring_candidates(keyfile, wrapped ? wrapped : "/dev/null");
	for (int i = 0; i < nt; i++)
	{
		printf("dump %s %s\n", t[i].label, t[i].hit[0] ? "match" : "none");
		if (keyfile)
			printf("keyring %s %s\n", t[i].label, t[i].hit[1] ? "match" : "none");
	}
	printf("candidates dump %lld keyring %lld\n", tried[0], tried[1]);
	return 0;
}
