/*
 * auditlogin.c: events about sessions that the audit queue records whatever becomes of their
 * transaction: LOGIN and LOGIN_FAILED (client authentication), and DENIED (statements refused for
 * want of privilege, by crm or by PostgreSQL).
 */
#include "crm.h"

#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/json.h"

#define DETAIL_LEN CRM_AUDIT_DETAIL_LEN

static ClientAuthentication_hook_type prev_client_auth = NULL;
static emit_log_hook_type prev_emit_log = NULL;

static void
crm_client_auth(Port *port, int status)
{
	char		addr[64] = "";
	StringInfoData d;

	if (prev_client_auth)
		prev_client_auth(port, status);
	if (port->remote_host && port->raddr.addr.ss_family != AF_UNIX)
		strlcpy(addr, port->remote_host, sizeof(addr));
	initStringInfo(&d);
	appendStringInfoString(&d, "{\"method\": ");
	escape_json(&d, port->hba ? hba_authname(port->hba->auth_method) : "unknown");
	appendStringInfoString(&d, ", \"local\": ");
	appendStringInfoString(&d, port->raddr.addr.ss_family == AF_UNIX ? "true" : "false");
	appendStringInfoChar(&d, '}');
	(void) crm_auditq_push(port->database_name, status == STATUS_OK ? "LOGIN" : "LOGIN_FAILED", NULL, 0, 0,
						   port->user_name, port->user_name, addr, port->application_name, d.data);
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
static bool in_emit = false;

static void
crm_emit_log(ErrorData *edata)
{
	if (prev_emit_log)
		prev_emit_log(edata);
	if (in_emit || edata->elevel != ERROR || edata->sqlerrcode != ERRCODE_INSUFFICIENT_PRIVILEGE ||
		!OidIsValid(MyDatabaseId) || !IsUnderPostmaster || MyBackendType != B_BACKEND)
		return;
	in_emit = true;
	{
		StringInfoData d;
		char		addr[64] = "";
		char		db[NAMEDATALEN] = "";
		char		cu[NAMEDATALEN] = "";

		/* no catalog access here: names come from what the session already knows */
		if (MyProcPort && MyProcPort->database_name)
			strlcpy(db, MyProcPort->database_name, sizeof(db));
		if (MyProcPort && MyProcPort->remote_host && MyProcPort->raddr.addr.ss_family != AF_UNIX)
			strlcpy(addr, MyProcPort->remote_host, sizeof(addr));
		denied_detail(&d, edata->message ? edata->message : "", debug_query_string ? debug_query_string : "");
		if (db[0] != '\0')
			(void) crm_auditq_push(db, "DENIED", NULL, 0, crm_last_principal,
								   MyProcPort && MyProcPort->user_name ? MyProcPort->user_name : "", cu, addr,
								   application_name, d.data);
		pfree(d.data);
	}
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
