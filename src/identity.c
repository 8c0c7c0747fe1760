/*
 * identity.c: who is acting. Owns crm.current_principal(), crm.act_as() and the per-transaction
 * identity state.
 *
 * The acting principal is, in order: the principal set by crm.act_as() in this transaction, or
 * the principal mapped to the outer user (the login, or the role chosen by SET ROLE; unaffected
 * by SECURITY DEFINER functions). act_as applies only while the outer user is the role that
 * called it. Nothing here reads a setting, so no SET or set_config() can
 * change who is acting. act_as state lives in backend memory and is cleared at every commit,
 * abort and prepare; a rolled-back savepoint restores what was in force before it.
 */
#include "crm.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "tcop/pquery.h"
#include "utils/portal.h"

/* act_as state: principal and the subtransaction level that set it, with what it replaced */
typedef struct ActAsFrame
{
	int64		principal;
	int			nest_level;
	Oid			set_by;			/* the outer user that called act_as; it binds only that user */
	struct ActAsFrame *prev;
} ActAsFrame;

static ActAsFrame *act_as_top = NULL;	/* in TopTransactionContext */

/* the outer user's own principal: kept across transactions, dropped by crm_identity_reset() */
static bool login_cache_valid = false;
static Oid	login_cache_user = InvalidOid;
static int64 login_cache_principal = 0;
static bool login_cache_found = false;

static void
crm_identity_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			act_as_top = NULL;	/* its memory goes with TopTransactionContext */
			break;
		default:
			break;
	}
}

static void
crm_identity_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		int			level = GetCurrentTransactionNestLevel();

		while (act_as_top != NULL && act_as_top->nest_level >= level)
			act_as_top = act_as_top->prev;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		/* what the committed subtransaction set now belongs to its parent */
		int			level = GetCurrentTransactionNestLevel();
		ActAsFrame *f;

		for (f = act_as_top; f != NULL && f->nest_level >= level; f = f->prev)
			f->nest_level = level - 1;
	}
}

void
crm_identity_reset(void)
{
	login_cache_valid = false;
}

void
crm_identity_init(void)
{
	RegisterXactCallback(crm_identity_xact_callback, NULL);
	RegisterSubXactCallback(crm_identity_subxact_callback, NULL);
}

static bool lookup_principal(bool by_login, Datum key, int64 *id, bool *active);

/* The active principal whose login is the given role. */
static bool
lookup_login_principal(Oid roleid, int64 *principal)
{
	char	   *rolname = GetUserNameFromId(roleid, true);
	bool		active = false;

	if (rolname == NULL)
		return false;
	return lookup_principal(true, CStringGetTextDatum(rolname), principal, &active) && active;
}

/* the principal last resolved in this backend (for DENIED events, written where no lookup may run) */
int64		crm_last_principal = 0;

int64
crm_current_principal(bool *found)
{
	Oid			outer = GetOuterUserId();

	/* act_as binds the role that called it: after SET ROLE / RESET ROLE it no longer applies */
	if (act_as_top != NULL && act_as_top->set_by == outer)
	{
		/* principal 0: crm's own maintenance, acting for nobody */
		*found = act_as_top->principal != 0;
		crm_last_principal = act_as_top->principal;
		return act_as_top->principal;
	}
	if (!IsTransactionState())
	{
		*found = false;
		return 0;
	}
	if (!login_cache_valid || login_cache_user != outer)
	{
		int64		p = 0;

		crm_watch_catalogs();	/* so that a change to crm.principal drops this cache */
		login_cache_found = lookup_login_principal(outer, &p);
		login_cache_principal = p;
		login_cache_user = outer;
		login_cache_valid = true;
	}
	*found = login_cache_found;
	crm_last_principal = login_cache_found ? login_cache_principal : 0;
	return login_cache_principal;
}

/* SQL function: crm.current_principal() returns bigint */
PG_FUNCTION_INFO_V1(crm_current_principal_sql);
Datum
crm_current_principal_sql(PG_FUNCTION_ARGS)
{
	bool		found;
	int64		p = crm_current_principal(&found);

	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_INT64(p);
}

/* SQL function: crm.acting_as() returns bigint: the act_as principal, NULL when none */
PG_FUNCTION_INFO_V1(crm_acting_as);
Datum
crm_acting_as(PG_FUNCTION_ARGS)
{
	if (act_as_top == NULL || act_as_top->set_by != GetOuterUserId())
		PG_RETURN_NULL();
	PG_RETURN_INT64(act_as_top->principal);
}

/* Find a principal by id or by login, as crm's catalog owner: its id and whether it is active. */
static bool
lookup_principal(bool by_login, Datum key, int64 *id, bool *active)
{
	Oid			argtypes[1] = {by_login ? TEXTOID : INT8OID};
	Datum		values[1] = {key};
	Datum		out[2];
	bool		outnull[2];

	if (!crm_query_row_as_owner(by_login
								? "SELECT p.id, p.active FROM crm.principal p WHERE p.login OPERATOR(pg_catalog.=) $1"
								: "SELECT p.id, p.active FROM crm.principal p WHERE p.id OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, out, outnull, 2))
		return false;
	*id = DatumGetInt64(out[0]);
	*active = DatumGetBool(out[1]);
	return true;
}

/* Cursors (DECLARE, named protocol portals, SPI cursors) open besides the running statement. */
static bool
other_cursors_open(void)
{
	Oid			types[1] = {TEXTOID};
	Datum		vals[1];
	Datum		out[1];
	bool		outnull[1];
	const char *active = (ActivePortal != NULL && ActivePortal->name != NULL) ? ActivePortal->name : "";

	vals[0] = CStringGetTextDatum(active);
	return crm_query_row_as_owner("SELECT c.name FROM pg_catalog.pg_cursors c WHERE c.name OPERATOR(pg_catalog.<>) $1 LIMIT 1",
								  1, types, vals, out, outnull, 1);
}

static int64
act_as_common(bool by_login, Datum key, const char *shown)
{
	Oid			app_role = get_role_oid("crm_app", true);
	Oid			outer = GetOuterUserId();
	MemoryContext old;
	ActAsFrame *f;
	int64		principal = 0;
	bool		active = false;

	/* the right to impersonate is checked first, so strangers learn nothing about principals */
	if (!OidIsValid(app_role) || !is_member_of_role_nosuper(outer, app_role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to act as principal %s", crm_short(shown)),
				 errdetail("Role \"%s\" is not a member of crm_app.",
						   crm_shortn(GetUserNameFromId(outer, false), 256)),
				 errhint("Only application roles granted crm_app may call crm.act_as().")));
	/* masking of open queries and cursors was decided for the actor that started them */
	if (crm_is_preloaded && crm_data_queries_open())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("crm.act_as() cannot switch actors while a query or cursor over crm_data is open"),
				 errhint("Call crm.act_as() in a statement of its own, after closing open cursors.")));
	if (crm_is_preloaded && other_cursors_open())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("crm.act_as() cannot switch actors while cursors are open"),
				 errdetail("A cursor keeps the rows and masking of the actor that opened it."),
				 errhint("Close open cursors first (see pg_cursors).")));
	if (!lookup_principal(by_login, key, &principal, &active))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("principal %s does not exist", crm_short(shown))));
	if (!active)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("principal %s is deactivated", crm_short(shown)),
				 errhint("An administrator can reactivate it with crm.reactivate_principal().")));
	if (!IsTransactionBlock())
		ereport(NOTICE,
				(errmsg("crm.act_as() outside a transaction block lasts only for this statement"),
				 errhint("Call it after BEGIN; it lasts until COMMIT or ROLLBACK.")));

	old = MemoryContextSwitchTo(TopTransactionContext);
	f = palloc(sizeof(ActAsFrame));
	MemoryContextSwitchTo(old);
	f->principal = principal;
	f->set_by = outer;
	f->nest_level = GetCurrentTransactionNestLevel();
	f->prev = act_as_top;
	act_as_top = f;
	/* plans made for the previous actor's field levels must not serve this one */
	crm_masking_actor_changed();
	/* audited whether or not the transaction commits: what it read, it read as this principal */
	{
		StringInfoData d;

		/* a role name may hold any character: escaped, never pasted into the JSON */
		initStringInfo(&d);
		appendStringInfoString(&d, "{\"app_login\": ");
		escape_json(&d, GetUserNameFromId(outer, false));
		appendStringInfoChar(&d, '}');
		crm_auditq_session_event("ACT_AS", "principal", principal, principal, d.data);
	}
	return principal;
}

/* SQL function: crm.act_as(principal bigint) returns bigint */
PG_FUNCTION_INFO_V1(crm_act_as);
Datum
crm_act_as(PG_FUNCTION_ARGS)
{
	int64		p = PG_GETARG_INT64(0);
	char		buf[32];

	snprintf(buf, sizeof(buf), "%lld", (long long) p);
	PG_RETURN_INT64(act_as_common(false, Int64GetDatum(p), buf));
}

/* SQL function: crm.act_as(login text) returns bigint */
PG_FUNCTION_INFO_V1(crm_act_as_login);
Datum
crm_act_as_login(PG_FUNCTION_ARGS)
{
	text	   *login = PG_GETARG_TEXT_PP(0);
	char	   *shown = quote_literal_cstr(text_to_cstring(login));

	PG_RETURN_INT64(act_as_common(true, PointerGetDatum(login), shown));
}

/*
 * SQL function: crm._caller_has_role(role name) returns boolean
 * Whether the outer user (not a SECURITY DEFINER function's owner) has the privileges of a role.
 */
PG_FUNCTION_INFO_V1(crm_caller_has_role);
Datum
crm_caller_has_role(PG_FUNCTION_ARGS)
{
	Oid			role = get_role_oid(NameStr(*PG_GETARG_NAME(0)), true);

	PG_RETURN_BOOL(OidIsValid(role) && has_privs_of_role(GetOuterUserId(), role));
}

/*
 * crm's own code acting for a principal (a rule's actions run as the rule's owner): push before,
 * pop after, on error too. Binds the current outer user only, like act_as, and needs no crm_app.
 */
void
crm_push_principal(int64 principal)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	ActAsFrame *f = palloc(sizeof(ActAsFrame));

	MemoryContextSwitchTo(old);
	f->principal = principal;
	f->set_by = GetOuterUserId();
	f->nest_level = GetCurrentTransactionNestLevel();
	f->prev = act_as_top;
	act_as_top = f;
}

void
crm_pop_principal(void)
{
	if (act_as_top != NULL)
		act_as_top = act_as_top->prev;
}

/*
 * SQL function: crm._as_system(sql text, args bigint[]) returns bigint — runs one of crm's own fixed
 * statements (erasure, retention) with no acting principal, so that field levels do not stop
 * crm's maintenance; $1 is the array of ids. Not granted to anyone: only crm's SECURITY DEFINER functions
 * call it. Returns the rows processed.
 */
PG_FUNCTION_INFO_V1(crm_as_system);
Datum
crm_as_system(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {INT8ARRAYOID};
	Datum		vals[1] = {PG_GETARG_DATUM(1)};
	char		nulls[1] = {PG_ARGISNULL(1) ? 'n' : ' '};
	volatile uint64 n = 0;

	crm_push_principal(0);
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute_with_args(sql, 1, types, vals, nulls, false, 0) < 0)
			elog(ERROR, "crm: maintenance statement failed");
		n = SPI_processed;
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_pop_principal();
	}
	PG_END_TRY();
	PG_RETURN_INT64((int64) n);
}
