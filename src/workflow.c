/*
 * workflow.c: what of workflows runs per row. The status field a workflow drives belongs to it: the
 * trigger crm._workflow_guard() refuses any change of that field except the one the workflow API
 * is making at that moment (crm._workflow_set_status), and any DELETE of a record whose workflow
 * is running. crm._visible() asks whether the caller (not crm's owner) may see a record.
 */
#include "crm.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/pg_trigger.h"
#include "nodes/makefuncs.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/* the one status change the API is making now */
static Oid	expect_rel = InvalidOid;
static int64 expect_id = 0;
static char *expect_value = NULL;

/*
 * Trigger crm._workflow_guard(workflow, status_field), BEFORE INSERT OR UPDATE OR DELETE, ENABLE
 * ALWAYS on the object's table.
 */
PG_FUNCTION_INFO_V1(crm_workflow_guard);
Datum
crm_workflow_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	const char *wf, *field;
	int			att, idatt;
	bool		isnull;
	int64		id;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		td->tg_trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm._workflow_guard() must be a BEFORE row trigger with a workflow and a field")));
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	wf = td->tg_trigger->tgargs[0];
	field = td->tg_trigger->tgargs[1];
	att = SPI_fnumber(desc, field);
	idatt = SPI_fnumber(desc, "id");
	if (att <= 0 || idatt <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table %s has no column \"%s\" for workflow \"%s\"", crm_short(RelationGetRelationName(rel)), crm_short(field), crm_short(wf))));

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		/* a new record starts without a status: crm.start_workflow() gives it its first */
		(void) heap_getattr(td->tg_trigtuple, att, desc, &isnull);
		if (!isnull)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("%s.%s is driven by workflow \"%s\"", crm_short(RelationGetRelationName(rel)), crm_short(field), crm_short(wf)),
					 errdetail("A new record cannot be given a status."),
					 errhint("Insert it without %s, then call crm.start_workflow('%s', id).", crm_shortn(field, 256), crm_shortn(wf, 256))));
		return PointerGetDatum(td->tg_trigtuple);
	}
	id = DatumGetInt64(heap_getattr(td->tg_trigtuple, idatt, desc, &isnull));
	if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
		Oid			types[3] = {TEXTOID, INT8OID, TEXTOID};
		Datum		vals[3] = {CStringGetTextDatum(RelationGetRelationName(rel)), Int64GetDatum(id), CStringGetTextDatum(wf)};
		Datum		out[1];
		bool		outnull[1];

		if (crm_query_row_as_owner("SELECT i.state FROM crm.workflow_instance i WHERE i.object OPERATOR(pg_catalog.=) $1"
								   " AND i.record_id OPERATOR(pg_catalog.=) $2 AND i.workflow OPERATOR(pg_catalog.=) $3"
								   " AND i.ended_at IS NULL", 3, types, vals, out, outnull, 1))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("%s %lld cannot be deleted while workflow \"%s\" runs on it", crm_short(RelationGetRelationName(rel)),
							(long long) id, crm_short(wf)),
					 errdetail("It is in state \"%s\".", crm_shortn(TextDatumGetCString(out[0]), 256)),
					 errhint("Finish it, or have an administrator end it with crm.cancel_workflow().")));
		return PointerGetDatum(td->tg_trigtuple);
	}
	/* UPDATE: the status may change only as the API is changing it now */
	{
		bool		onull, nnull;
		Datum		o = heap_getattr(td->tg_trigtuple, att, desc, &onull);
		Datum		n = heap_getattr(td->tg_newtuple, att, desc, &nnull);
		char	   *ov = onull ? NULL : TextDatumGetCString(o);
		char	   *nv = nnull ? NULL : TextDatumGetCString(n);

		if ((ov == NULL) != (nv == NULL) || (ov && strcmp(ov, nv) != 0))
		{
			if (!(expect_value != NULL && expect_rel == RelationGetRelid(rel) && expect_id == id && nv != NULL &&
				  strcmp(expect_value, nv) == 0))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("%s.%s is driven by workflow \"%s\"", crm_short(RelationGetRelationName(rel)), crm_short(field), crm_short(wf)),
						 errdetail("%s %lld is in state \"%s\".", crm_shortn(RelationGetRelationName(rel), 256), (long long) id, crm_shortn(ov ? ov : "(none)", 256)),
						 errhint("Change it through crm.transition(), crm.approve() or crm.reject().")));
			/* used once */
			expect_value = NULL;
			expect_rel = InvalidOid;
		}
	}
	return PointerGetDatum(td->tg_newtuple);
}

/*
 * SQL function: crm._workflow_set_status(object text, record_id bigint, field text, value text)
 * returns boolean. The workflow API's one way to change a status.
 */
PG_FUNCTION_INFO_V1(crm_workflow_set_status);
Datum
crm_workflow_set_status(PG_FUNCTION_ARGS)
{
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		id = PG_GETARG_INT64(1);
	char	   *field = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *value = text_to_cstring(PG_GETARG_TEXT_PP(3));
	Oid			nsp = get_namespace_oid("crm_data", false);
	Oid			relid = get_relname_relid(object, nsp);
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		vals[2];
	CrmUserSwitch sw;
	volatile uint64 n = 0;

	if (!OidIsValid(relid))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("object \"%s\" does not exist", crm_short(object))));
	vals[0] = CStringGetTextDatum(value);
	vals[1] = Int64GetDatum(id);
	crm_switch_to_owner(&sw);
	PG_TRY();
	{
		SPIPlanPtr	plan;
		const char *sql = psprintf("UPDATE crm_data.%s SET %s = $1 WHERE id OPERATOR(pg_catalog.=) $2",
								   quote_identifier(object), quote_identifier(field));

		expect_rel = relid;
		expect_id = id;
		expect_value = MemoryContextStrdup(TopTransactionContext, value);
		SPI_connect();
		plan = crm_kept_plan(sql, 2, types);
		if ((plan ? SPI_execute_plan(plan, vals, NULL, false, 0)
			 : SPI_execute_with_args(sql, 2, types, vals, NULL, false, 0)) != SPI_OK_UPDATE)
			elog(ERROR, "crm: could not set the status of %s %lld", object, (long long) id);
		n = SPI_processed;
		SPI_finish();
	}
	PG_FINALLY();
	{
		expect_value = NULL;
		expect_rel = InvalidOid;
		crm_restore_user(&sw);
	}
	PG_END_TRY();
	PG_RETURN_BOOL(n == 1);
}

/*
 * Whether the user outside crm's SECURITY DEFINER functions (and the principal acting for it) can
 * see the record (edit: and update it): the query runs as that user, under row security (SELECT
 * ... FOR UPDATE applies the update policies too, and locks the row for the write that follows).
 */
static bool
outer_user_reaches(const char *object, int64 id, bool edit)
{
	Oid			save_user;
	int			save_sec;
	volatile bool seen = false;
	Oid			types[1] = {INT8OID};
	Datum		vals[1] = {Int64GetDatum(id)};
	int			save_depth = crm_internal_depth;
	volatile int nest = 0;

	{
		Oid			nsp = get_namespace_oid("crm_data", false);
		Oid			relid = get_relname_relid(object, nsp);

		if (!OidIsValid(relid) ||
			pg_class_aclcheck(relid, GetOuterUserId(), edit ? ACL_UPDATE : ACL_SELECT) != ACLCHECK_OK)
			return false;
	}
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(GetOuterUserId(), save_sec | SECURITY_LOCAL_USERID_CHANGE);
	crm_internal_depth = 0;
	PG_TRY();
	{
		const char *sql = psprintf("SELECT 1 FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $1%s",
								   quote_identifier(object), edit ? " FOR UPDATE" : "");
		SPIPlanPtr	plan;

		/* the caller's search_path must not reach into what runs as another role */
		nest = crm_pin_search_path(CRM_SAFE_SEARCH_PATH);
		SPI_connect();
		plan = crm_kept_plan(sql, 1, types);
		if ((plan ? SPI_execute_plan(plan, vals, NULL, !edit, 1)
			 : SPI_execute_with_args(sql, 1, types, vals, NULL, !edit, 1)) == SPI_OK_SELECT)
			seen = SPI_processed == 1;
		SPI_finish();
	}
	PG_FINALLY();
	{
		crm_unpin_search_path(nest);
		crm_internal_depth = save_depth;
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
	return seen;
}

/* SQL function: crm._visible(object text, record_id bigint) returns boolean (STRICT) */
PG_FUNCTION_INFO_V1(crm_visible);
Datum
crm_visible(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(outer_user_reaches(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1), false));
}

/* SQL function: crm._editable(object text, record_id bigint) returns boolean (STRICT) */
PG_FUNCTION_INFO_V1(crm_editable);
Datum
crm_editable(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(outer_user_reaches(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1), true));
}

/*
 * SQL function: crm._workflow_trigger(workflow text, object text, field text, install boolean)
 * returns void. (Re)creates or drops trigger crm_wf_<workflow> on crm_data.<object>: BEFORE INSERT
 * OR UPDATE OR DELETE FOR EACH ROW, firing ALWAYS. Made here, not by SQL, because crm's utility
 * guard refuses everyone DDL on crm_* triggers of managed tables.
 */
PG_FUNCTION_INFO_V1(crm_workflow_trigger);
Datum
crm_workflow_trigger(PG_FUNCTION_ARGS)
{
	char	   *wf, *object, *field, *tgname;
	Oid			nsp, relid;

	crm_require_arg(fcinfo, 0, "crm._workflow_trigger", "workflow");
	crm_require_arg(fcinfo, 1, "crm._workflow_trigger", "object");
	crm_require_arg(fcinfo, 2, "crm._workflow_trigger", "field");
	crm_require_arg(fcinfo, 3, "crm._workflow_trigger", "install");
	wf = text_to_cstring(PG_GETARG_TEXT_PP(0));
	object = text_to_cstring(PG_GETARG_TEXT_PP(1));
	field = text_to_cstring(PG_GETARG_TEXT_PP(2));
	tgname = psprintf("crm_wf_%s", wf);
	if (strlen(tgname) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("workflow name \"%s\" is too long", crm_short(wf)),
				 errdetail("A workflow's trigger is named crm_wf_<workflow>, at most %d bytes.", NAMEDATALEN - 1)));
	nsp = get_namespace_oid("crm_data", false);
	relid = get_relname_relid(object, nsp);
	if (!OidIsValid(relid))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("object \"%s\" does not exist", crm_short(object))));
	crm_drop_trigger(relid, tgname);
	if (PG_GETARG_BOOL(3))
	{
		CreateTrigStmt *st = makeNode(CreateTrigStmt);
		Relation	rel;

		st->trigname = tgname;
		st->relation = makeRangeVar("crm_data", object, -1);
		st->funcname = list_make2(makeString("crm"), makeString("_workflow_guard"));
		st->args = list_make2(makeString(wf), makeString(field));
		st->row = true;
		st->timing = TRIGGER_TYPE_BEFORE;
		st->events = TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE;
		(void) CreateTrigger(st, "crm.define_workflow()", relid, InvalidOid, InvalidOid, InvalidOid, InvalidOid,
							 InvalidOid, NULL, false, false);
		CommandCounterIncrement();
		rel = table_open(relid, ShareRowExclusiveLock);
		EnableDisableTrigger(rel, tgname, TRIGGER_FIRES_ALWAYS, false, ShareRowExclusiveLock);
		table_close(rel, NoLock);
		CommandCounterIncrement();
	}
	PG_RETURN_VOID();
}

/* SQL function: crm._record_owner(object text, record_id bigint) returns bigint */
PG_FUNCTION_INFO_V1(crm_record_owner);
Datum
crm_record_owner(PG_FUNCTION_ARGS)
{
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {INT8OID};
	Datum		vals[1] = {PG_GETARG_DATUM(1)};
	Datum		out[1];
	bool		outnull[1];

	if (!crm_query_row_as_owner(psprintf("SELECT t.owner_id FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $1",
										 quote_identifier(object)), 1, types, vals, out, outnull, 1) || outnull[0])
		PG_RETURN_NULL();
	PG_RETURN_DATUM(out[0]);
}

/* SQL function: crm._record_unit(object text, record_id bigint) returns bigint */
PG_FUNCTION_INFO_V1(crm_record_unit);
Datum
crm_record_unit(PG_FUNCTION_ARGS)
{
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {INT8OID};
	Datum		vals[1] = {PG_GETARG_DATUM(1)};
	Datum		out[1];
	bool		outnull[1];

	if (!crm_query_row_as_owner(psprintf("SELECT t.org_unit_id FROM crm_data.%s t WHERE t.id OPERATOR(pg_catalog.=) $1",
										 quote_identifier(object)), 1, types, vals, out, outnull, 1) || outnull[0])
		PG_RETURN_NULL();
	PG_RETURN_DATUM(out[0]);
}

/* Drop one of crm's triggers on a table when it is there (crm's own DDL, past the utility guard). */
void
crm_drop_trigger(Oid relid, const char *name)
{
	Oid			old = get_trigger_oid(relid, name, true);

	if (OidIsValid(old))
	{
		ObjectAddress o;

		ObjectAddressSet(o, TriggerRelationId, old);
		performDeletion(&o, DROP_RESTRICT, PERFORM_DELETION_INTERNAL);
		CommandCounterIncrement();
	}
}
