/*
 * auditlogin.c: events about sessions that the audit queue records whatever becomes of their
 * transaction: LOGIN and LOGIN_FAILED (connection attempts), and DENIED (statements refused for
 * want of privilege, by crm or by PostgreSQL).
 *
 * LOGIN means the session really started. Authentication succeeding is not enough: the role may
 * not exist (trust and peer succeed before the role is looked up), may not log in, may lack
 * CONNECT, the database may not exist or not accept connections, and the role, the database or the
 * server may be out of connection slots. InitPostgres (postinit.c, PostgreSQL 15) runs its own
 * startup transaction: started before PerformAuthentication, committed at its very end, after all
 * of those checks. So the authentication hook only notes a pending LOGIN, and the commit of that
 * first transaction records it. Any FATAL of a client backend before that is LOGIN_FAILED, with
 * the message as the reason (pg_hba.conf "reject" and "no entry" never reach the authentication
 * hook; a failed password reaches it and then ends in auth_failed's FATAL: recorded once).
 *
 * These paths run inside authentication and error reporting: no catalog access, nothing that can
 * throw, and the FATAL path builds its detail in a fixed buffer (no allocation).
 */
#include "crm.h"

#include "access/xact.h"
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "mb/pg_wchar.h"
#include "replication/walsender.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/json.h"

#define DETAIL_LEN CRM_AUDIT_DETAIL_LEN
/* a LOGIN_FAILED reason is cut (at a character start) beyond this many bytes of JSON */
#define REASON_LEN 1024

static ClientAuthentication_hook_type prev_client_auth = NULL;
static emit_log_hook_type prev_emit_log = NULL;

/* this backend's connection attempt */
static bool session_started = false;	/* the startup transaction committed: LOGIN recorded */
static bool login_pending = false;	/* authenticated; LOGIN when the startup transaction commits */
static bool auth_failed = false;	/* the authentication hook saw STATUS_ERROR */
static bool failure_recorded = false;	/* this attempt's LOGIN_FAILED is in the queue */
static const char *auth_method = NULL;	/* hba_authname(): a static string */

static bool
is_client_backend(void)
{
	return IsUnderPostmaster && MyProcPort != NULL &&
		(MyBackendType == B_BACKEND || MyBackendType == B_WAL_SENDER);
}

static bool
is_local(Port *port)
{
	return port->raddr.addr.ss_family == AF_UNIX;
}

static void
client_addr(Port *port, char *addr, size_t size)
{
	crm_client_addr(port, addr, size);
}

/*
 * Append s as a JSON string to buf (cap bytes, *len used), leaving room for `reserve` more bytes;
 * a string that does not fit is cut before the first character that does not (never inside a
 * UTF-8 sequence). s NULL: null. Never allocates, never throws.
 */
static void
put_json(char *buf, size_t cap, size_t *len, const char *s, size_t reserve)
{
	size_t		n = *len;
	size_t		start;
	size_t		lim = cap - reserve - 2;	/* the closing quote and the NUL */

	if (s == NULL)
	{
		if (n + 4 <= lim)
			n += strlcpy(buf + n, "null", cap - n);
		*len = n;
		return;
	}
	buf[n++] = '"';
	start = n;
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;
		char		e[8];
		size_t		k = 1;

		e[0] = (char) c;
		if (c == '"' || c == '\\')
		{
			e[0] = '\\';
			e[1] = (char) c;
			k = 2;
		}
		else if (c < 0x20)
			k = snprintf(e, sizeof(e), "\\u%04x", c);
		if (n + k > lim)
		{
			if ((c & 0xC0) == 0x80)
			{
				/* drop the partial character already copied: its continuation bytes, its lead */
				while (n > start && ((unsigned char) buf[n - 1] & 0xC0) == 0x80)
					n--;
				if (n > start && (unsigned char) buf[n - 1] >= 0xC0)
					n--;
			}
			break;
		}
		memcpy(buf + n, e, k);
		n += k;
	}
	buf[n++] = '"';
	buf[n] = '\0';
	*len = n;
}

static void
push_login_event(Port *port, const char *action, const char *detail)
{
	char		addr[64];

	client_addr(port, addr, sizeof(addr));
	(void) crm_auditq_push(port->database_name ? port->database_name : "", action, NULL, 0, 0, port->user_name, port->user_name, addr,
						   port->application_name, detail);
}

/* LOGIN_FAILED: {"reason", "sqlstate", "method", "local"} (method null before pg_hba.conf matched) */
static void
push_login_failed(const char *reason, const char *sqlstate)
{
	char		d[REASON_LEN + 256];
	size_t		n = 0;
	Port	   *port = MyProcPort;

	failure_recorded = true;
	/*
	 * Before the startup packet named a database there is nothing to record it in. A physical
	 * replication connection names none, but does name its role: recorded in every database with
	 * crm (password guessing through replication=true must leave a trace too).
	 */
	if ((port->database_name == NULL || port->database_name[0] == '\0') &&
		!(am_walsender && port->user_name != NULL && port->user_name[0] != '\0'))
		return;
	/* pg_hba.conf "reject" and "no entry" never reach the authentication hook */
	if (auth_method == NULL && port->hba != NULL)
		auth_method = hba_authname(port->hba->auth_method);
	n += strlcpy(d, "{\"reason\": ", sizeof(d));
	put_json(d, REASON_LEN, &n, reason, 0);
	n += strlcpy(d + n, ", \"sqlstate\": ", sizeof(d) - n);
	put_json(d, sizeof(d), &n, sqlstate, 64);
	n += strlcpy(d + n, ", \"method\": ", sizeof(d) - n);
	put_json(d, sizeof(d), &n, auth_method, 32);
	strlcpy(d + n, is_local(port) ? ", \"local\": true}" : ", \"local\": false}", sizeof(d) - n);
	push_login_event(port, "LOGIN_FAILED", d);
}

/* The startup transaction's commit: the session started. Later transactions: nothing. */
static void
login_xact_callback(XactEvent event, void *arg)
{
	char		d[128];
	size_t		n = 0;

	if (event != XACT_EVENT_COMMIT || !login_pending || MyProcPort == NULL)
		return;
	login_pending = false;
	session_started = true;
	n += strlcpy(d, "{\"method\": ", sizeof(d));
	put_json(d, sizeof(d), &n, auth_method ? auth_method : "unknown", 32);
	strlcpy(d + n, is_local(MyProcPort) ? ", \"local\": true}" : ", \"local\": false}", sizeof(d) - n);
	push_login_event(MyProcPort, "LOGIN", d);
}

/*
 * An authentication failure whose FATAL never reached emit_log_hook (log_min_messages above
 * FATAL): recorded without the message when the backend exits.
 */
static void
auth_failed_at_exit(int code, Datum arg)
{
	if (auth_failed && !failure_recorded && !session_started && MyProcPort != NULL)
		push_login_failed("authentication failed", NULL);
}

static void
crm_client_auth(Port *port, int status)
{
	if (prev_client_auth)
		prev_client_auth(port, status);
	auth_method = port->hba ? hba_authname(port->hba->auth_method) : NULL;
	if (status == STATUS_OK)
	{
		login_pending = true;
		RegisterXactCallback(login_xact_callback, NULL);
	}
	else if (status == STATUS_ERROR && !auth_failed)
	{
		/* auth_failed() reports the FATAL next: emit_log_hook records it with its message */
		auth_failed = true;
		before_shmem_exit(auth_failed_at_exit, (Datum) 0);
	}
	/* STATUS_EOF: the client hung up (psql asks for a password only after such a probe) */
}

/*
 * A DENIED event's detail: the message and the statement, cut at character boundaries to fit an
 * event however much escaping grows them (a long or odd statement must not make the event vanish);
 * "truncated": true says they were cut.
 */
static void
denied_detail(StringInfo d, const char *message, const char *statement)
{
	static const int cuts[][2] = {{500, 1000}, {200, 300}, {60, 60}};
	int			mlen = strlen(message);
	int			slen = strlen(statement);

	initStringInfo(d);
	for (int i = 0; i < (int) lengthof(cuts); i++)
	{
		int			m = pg_mbcliplen(message, mlen, Min(mlen, cuts[i][0]));
		int			st = pg_mbcliplen(statement, slen, Min(slen, cuts[i][1]));

		resetStringInfo(d);
		appendStringInfoString(d, "{\"message\": ");
		escape_json(d, pnstrdup(message, m));
		appendStringInfoString(d, ", \"statement\": ");
		escape_json(d, pnstrdup(statement, st));
		if (m < mlen || st < slen)
			appendStringInfoString(d, ", \"truncated\": true");
		appendStringInfoChar(d, '}');
		if (d->len < DETAIL_LEN)
			return;
	}
	resetStringInfo(d);
	appendStringInfo(d, "{\"truncated\": true, \"message_bytes\": %d, \"statement_bytes\": %d}", mlen, slen);
}

/* DENIED: statements refused for want of privilege (crm's checks and PostgreSQL's alike) */
static void
record_denied(ErrorData *edata)
{
	StringInfoData d;
	char		addr[64] = "";
	char		db[NAMEDATALEN] = "";
	char		cu[NAMEDATALEN] = "";

	/* no catalog access here: names come from what the session already knows */
	if (MyProcPort && MyProcPort->database_name)
		strlcpy(db, MyProcPort->database_name, sizeof(db));
	if (MyProcPort)
		client_addr(MyProcPort, addr, sizeof(addr));
	denied_detail(&d, edata->message ? edata->message : "", debug_query_string ? debug_query_string : "");
	if (db[0] != '\0')
		(void) crm_auditq_push(db, "DENIED", NULL, 0, crm_last_principal,
							   MyProcPort && MyProcPort->user_name ? MyProcPort->user_name : "", cu, addr,
							   application_name, d.data);
	pfree(d.data);
}

static bool in_emit = false;

static void
crm_emit_log(ErrorData *edata)
{
	if (prev_emit_log)
		prev_emit_log(edata);
	if (in_emit)
		return;
	in_emit = true;
	/* a FATAL before the session started (errors there are FATAL too): the attempt failed */
	if (edata->elevel >= FATAL && !session_started && !failure_recorded && is_client_backend())
		push_login_failed(edata->message ? edata->message : "", unpack_sql_state(edata->sqlerrcode));
	else if (edata->elevel == ERROR && edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE &&
			 OidIsValid(MyDatabaseId) && IsUnderPostmaster && MyBackendType == B_BACKEND)
		record_denied(edata);
	in_emit = false;
}

/* Called from _PG_init (via crm_auditq_init) when crm is preloaded. */
void
crm_auditlogin_init(void)
{
	prev_client_auth = ClientAuthentication_hook;
	ClientAuthentication_hook = crm_client_auth;
	prev_emit_log = emit_log_hook;
	emit_log_hook = crm_emit_log;
}
