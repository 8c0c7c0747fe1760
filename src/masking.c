/*
 * masking.c: dynamic masking of fields, for every client and query shape. Owns the planner and
 * post-parse-analyze hooks that rewrite every reference to a field the acting principal may not
 * read — in the select list, WHERE, JOIN, ORDER BY, GROUP BY, aggregates, RETURNING, sublinks,
 * CTEs, views (already expanded when the planner sees them), set-returning SQL functions inlined
 * while planning — into its mask: crm.mask(field, '<mask>') for 'masked', NULL for 'hidden', and
 * a CASE on owner_id when the level differs on the principal's own records. Predicates are thus
 * evaluated on the masked value: a masked actor learns nothing it could not see. Quals that views
 * and row security add are masked too (crm's policies read only standard columns; walls evaluate
 * their conditions in C on the real values). Principals who may read everything get their query
 * untouched (and keep their index scans).
 *
 * Plans depend on who planned them. The "signature" of an actor is its set of CRM roles (levels
 * derive from roles; the own-record CASE is evaluated at run time). Whenever the actor's
 * signature changes (act_as, SET ROLE, a plan made under another signature) the plan cache is
 * reset; an executor check refuses a stale plan that would otherwise run under another actor.
 */
#include "crm.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "access/table.h"
#include "catalog/pg_operator.h"
#include "common/hashfn.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/planner.h"
#include "parser/analyze.h"
#include "parser/parsetree.h"
#include "parser/parse_func.h"
#include "rewrite/rewriteManip.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/rel.h"

#define INT8_EQ_OPERATOR 410	/* int8 = int8 */
#define SIG_MAINTENANCE 1		/* superuser/BYPASSRLS without a principal: nothing masked */

static planner_hook_type prev_planner = NULL;
static post_parse_analyze_hook_type prev_post_parse_analyze = NULL;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;

/*
 * Queries over crm_data whose execution has started and not ended in this backend (open cursors
 * included). crm.act_as() refuses to switch actors under them: their masking was decided for
 * the actor that started them.
 */
typedef struct OpenQuery
{
	QueryDesc  *qd;
	int			nest_level;		/* subtransaction that started it */
} OpenQuery;
static List *open_data_queries = NIL;	/* of OpenQuery *, in TopMemoryContext */

static int	planning_depth = 0;
static uint32 planned_sig = 0;
static bool planned_sig_valid = false;

/* per-planning state */
typedef struct MaskState
{
	int64		principal;		/* 0: nobody (every protected field hidden) */
	Oid			data_nsp;
	Oid			mask_fn;
	Oid			current_principal_fn;
	Oid			write_denied_fn;
	Oid			decrypt_fn;
	Oid			saw_fn;
} MaskState;
static MaskState *mask_state = NULL;

/* principal -> signature (hash of its CRM roles), reset with crm's other caches */
typedef struct SigEntry
{
	int64		principal;
	uint32		sig;
} SigEntry;
static HTAB *sig_cache = NULL;
static bool crm_installed(void);
static Oid	cached_mask_fn = InvalidOid;
static Oid	cached_current_principal_fn = InvalidOid;
static Oid	cached_write_denied_fn = InvalidOid;
static Oid	cached_decrypt_fn = InvalidOid;
static Oid	cached_saw_fn = InvalidOid;

void
crm_masking_reset(void)
{
	if (sig_cache != NULL)
	{
		hash_destroy(sig_cache);
		sig_cache = NULL;
	}
	cached_mask_fn = InvalidOid;
	cached_current_principal_fn = InvalidOid;
	cached_write_denied_fn = InvalidOid;
	cached_decrypt_fn = InvalidOid;
	cached_saw_fn = InvalidOid;
	/* field levels may have changed: no plan made under the old ones may run again */
	ResetPlanCache();
	planned_sig_valid = false;
}

static uint32
principal_sig(int64 principal)
{
	SigEntry   *e;
	bool		found;
	Oid			types[1] = {INT8OID};
	Datum		vals[1] = {Int64GetDatum(principal)};
	Datum		out[1];
	bool		outnull[1];
	uint32		sig = 2;

	if (sig_cache == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(SigEntry);
		ctl.hcxt = CacheMemoryContext;
		sig_cache = hash_create("crm actor signatures", 32, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(sig_cache, &principal, HASH_FIND, &found);
	if (found)
		return e->sig;
	crm_watch_catalogs();
	if (crm_query_row_as_owner("SELECT pg_catalog.string_agg(pr.role, ',' ORDER BY pr.role) FROM crm.principal_role pr"
							   " WHERE pr.principal_id OPERATOR(pg_catalog.=) $1",
							   1, types, vals, out, outnull, 1) && !outnull[0])
	{
		char	   *roles = TextDatumGetCString(out[0]);

		sig = (uint32) hash_bytes((const unsigned char *) roles, strlen(roles));
		if (sig <= SIG_MAINTENANCE + 1)
			sig += 3;
	}
	if (sig_cache == NULL)		/* reset while we queried */
		return sig;
	e = hash_search(sig_cache, &principal, HASH_ENTER, &found);
	e->sig = sig;
	return sig;
}

/* The acting principal (0: nobody) and its signature; SIG_MAINTENANCE for the maintenance role. */
static uint32
current_sig(int64 *principal)
{
	bool		found;
	int64		p = crm_current_principal(&found);

	if (found)
	{
		*principal = p;
		return principal_sig(p);
	}
	*principal = 0;
	if (superuser() || has_bypassrls_privilege(GetUserId()))
		return SIG_MAINTENANCE;
	return 0;					/* nobody: sees no rows; plans hide every protected field */
}

/* Called when the actor may have changed (act_as, SET ROLE): drop plans made for another. */
void
crm_masking_actor_changed(void)
{
	int64		p;
	uint32		sig;

	if (!crm_is_preloaded || !IsTransactionState() || !crm_installed())
	{
		ResetPlanCache();
		planned_sig_valid = false;
		return;
	}
	sig = current_sig(&p);
	if (planned_sig_valid && sig != planned_sig)
	{
		ResetPlanCache();
		planned_sig_valid = false;
	}
}

/* crm's catalogs exist in this database (DROP EXTENSION leaves the schemas behind) */
static bool
crm_installed(void)
{
	Oid			nsp = get_namespace_oid("crm", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("principal", nsp));
}

/* --- building masked expressions --------------------------------------------------------------- */

typedef struct RteMask
{
	MaskState  *st;
	CrmFieldLevels *levels;
	Relation	rel;
	int			owner_attno;
} RteMask;

static Node *
masked_value(RteMask *rm, Var *var, int rank, const char *mask)
{
	if (rank >= 2)
		return (Node *) copyObject(var);
	if (rank == 1 && var->vartype == TEXTOID)
	{
		FuncExpr   *f = makeFuncExpr(rm->st->mask_fn, TEXTOID,
									 list_make2(copyObject(var),
												makeConst(TEXTOID, -1, InvalidOid, -1,
														  CStringGetTextDatum(mask), false, false)),
									 DEFAULT_COLLATION_OID, DEFAULT_COLLATION_OID, COERCE_EXPLICIT_CALL);

		return (Node *) f;
	}
	/* hidden, or a masked value of a type masks do not apply to (numbers, dates): NULL */
	return (Node *) makeNullConst(var->vartype, var->vartypmod, var->varcollid);
}

/*
 * The level entry of a column of the table (not of its blind index unless asked): its cached
 * number must still name that column (cache.c).
 */
static CrmFieldLevel *
level_of(RteMask *rm, AttrNumber attnum, bool blind_index_too)
{
	for (int i = 0; i < rm->levels->nfields; i++)
	{
		CrmFieldLevel *f = &rm->levels->fields[i];

		if (f->attnum == attnum && (blind_index_too || f->kind != CRM_FIELD_BLIND_INDEX) &&
			crm_attnum_valid(RelationGetDescr(rm->rel), f->attnum, f->name, f->atttypid))
			return f;
	}
	return NULL;
}

static Node *
field_expr(RteMask *rm, Var *var)
{
	CrmFieldLevel *f = level_of(rm, var->varattno, true);

	if (f != NULL && f->kind == CRM_FIELD_ENCRYPTED)
	{
		/* crm._decrypt(field, object, name, owner_id) applies the level itself, row by row */
		if (f->rank == 0 && f->own_rank == 0)
			return (Node *) makeNullConst(var->vartype, var->vartypmod, var->varcollid);
		return (Node *) makeFuncExpr(rm->st->decrypt_fn, TEXTOID,
									 list_make4(copyObject(var),
												makeConst(TEXTOID, -1, InvalidOid, -1,
														  CStringGetTextDatum(RelationGetRelationName(rm->rel)), false, false),
												makeConst(TEXTOID, -1, InvalidOid, -1,
														  CStringGetTextDatum(f->name), false, false),
												makeVar(var->varno, rm->owner_attno, INT8OID, -1, InvalidOid, var->varlevelsup)),
									 DEFAULT_COLLATION_OID, DEFAULT_COLLATION_OID,
									 COERCE_IMPLICIT_CAST);	/* marks it as the hook's (crypt.c) */
	}
	if (f == NULL || (f->rank >= 2 && f->own_rank >= 2))
		return (Node *) copyObject(var);
	if (f->rank == f->own_rank)
		return masked_value(rm, var, f->rank, f->mask);
	{
		/* CASE WHEN owner_id = crm.current_principal() THEN <own> ELSE <others> END */
		Var		   *owner = makeVar(var->varno, rm->owner_attno, INT8OID, -1, InvalidOid, var->varlevelsup);
		FuncExpr   *me = makeFuncExpr(rm->st->current_principal_fn, INT8OID, NIL, InvalidOid, InvalidOid,
									  COERCE_EXPLICIT_CALL);
		Expr	   *is_own = make_opclause(INT8_EQ_OPERATOR, BOOLOID, false, (Expr *) owner, (Expr *) me,
										   InvalidOid, InvalidOid);
		CaseExpr   *c = makeNode(CaseExpr);
		CaseWhen   *w = makeNode(CaseWhen);

		set_opfuncid((OpExpr *) is_own);
		w->expr = is_own;
		w->result = (Expr *) masked_value(rm, var, f->own_rank, f->mask);
		w->location = -1;
		c->casetype = var->vartype;
		c->casecollid = var->varcollid;
		c->args = list_make1(w);
		c->defresult = (Expr *) masked_value(rm, var, f->rank, f->mask);
		c->location = -1;
		return (Node *) c;
	}
}

static Node *
replace_callback(Var *var, replace_rte_variables_context *context)
{
	RteMask    *rm = (RteMask *) context->callback_arg;

	if (var->varattno > 0)
		return field_expr(rm, var);
	if (var->varattno == 0)
	{
		/* a whole-row reference (row_to_json(c), c.*): the row of masked values */
		TupleDesc	desc = RelationGetDescr(rm->rel);
		RowExpr    *row = makeNode(RowExpr);

		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute a = TupleDescAttr(desc, i);

			if (a->attisdropped)
				row->args = lappend(row->args, makeNullConst(INT4OID, -1, InvalidOid));
			else
				row->args = lappend(row->args,
									field_expr(rm, makeVar(var->varno, a->attnum, a->atttypid, a->atttypmod,
														   a->attcollation, var->varlevelsup)));
			row->colnames = lappend(row->colnames, makeString(pstrdup(NameStr(a->attname))));
		}
		row->row_typeid = var->vartype;
		row->row_format = COERCE_IMPLICIT_CAST;
		row->location = -1;
		return (Node *) row;
	}
	return (Node *) copyObject(var);	/* system columns hold no field values */
}

/*
 * An assignment to a field the actor may not read on some records becomes
 * CASE WHEN owner_id = crm.current_principal() THEN <expr or refusal> ELSE <expr or refusal> END,
 * so that writing it there is refused whatever the value (no guessing through "unchanged").
 */
static void
guard_assignments(RteMask *rm, List *targetList, int rti, const char *object)
{
	ListCell   *lc;

	foreach(lc, targetList)
	{
		TargetEntry *te = (TargetEntry *) lfirst(lc);
		CrmFieldLevel *f = NULL;
		Form_pg_attribute a;
		Node	   *deny;
		Var		   *owner;
		CaseExpr   *c;
		CaseWhen   *w;
		Expr	   *is_own;

		if (te->resjunk)
			continue;
		f = level_of(rm, te->resno, true);
		if (f == NULL || (f->rank >= 2 && f->own_rank >= 2))
			continue;
		if (IsA(te->expr, Var) && ((Var *) te->expr)->varno == rti &&
			((Var *) te->expr)->varlevelsup == 0 && ((Var *) te->expr)->varattno == te->resno)
			continue;			/* SET f = f changes nothing */
		a = TupleDescAttr(RelationGetDescr(rm->rel), te->resno - 1);
		deny = (Node *) makeFuncExpr(rm->st->write_denied_fn, a->atttypid,
									 list_make3(makeNullConst(a->atttypid, a->atttypmod, a->attcollation),
												makeConst(TEXTOID, -1, InvalidOid, -1, CStringGetTextDatum(object), false, false),
												makeConst(TEXTOID, -1, InvalidOid, -1, CStringGetTextDatum(f->name), false, false)),
									 InvalidOid, a->attcollation, COERCE_EXPLICIT_CALL);
		owner = makeVar(rti, rm->owner_attno, INT8OID, -1, InvalidOid, 0);
		is_own = make_opclause(INT8_EQ_OPERATOR, BOOLOID, false, (Expr *) owner,
							   (Expr *) makeFuncExpr(rm->st->current_principal_fn, INT8OID, NIL, InvalidOid,
													 InvalidOid, COERCE_EXPLICIT_CALL),
							   InvalidOid, InvalidOid);
		set_opfuncid((OpExpr *) is_own);
		w = makeNode(CaseWhen);
		w->expr = is_own;
		w->result = f->own_rank >= 2 ? te->expr : (Expr *) copyObject(deny);
		w->location = -1;
		c = makeNode(CaseExpr);
		c->casetype = a->atttypid;
		c->casecollid = a->attcollation;
		c->args = list_make1(w);
		c->defresult = f->rank >= 2 ? (Expr *) copyObject(te->expr) : (Expr *) deny;
		c->location = -1;
		te->expr = (Expr *) c;
	}
}

/*
 * Reads of sensitive fields the actor may read unmasked, in what a query returns (select list,
 * RETURNING), are wrapped in crm._saw(), which notes the record for the READ_SENSITIVE event.
 */
typedef struct SawCtx
{
	RteMask    *rm;
	int			rti;
	int			id_attno;
} SawCtx;

static Node *
saw_mutator(Node *node, SawCtx *c)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Query))
		return node;			/* sub-queries are rewritten at their own level */
	if (IsA(node, Var))
	{
		Var		   *v = (Var *) node;
		CrmFieldLevel *f = NULL;

		if (v->varno != c->rti || v->varlevelsup != 0 || v->varattno <= 0)
			return node;
		f = level_of(c->rm, v->varattno, false);
		if (f == NULL || !f->sensitive || (f->rank < 2 && f->own_rank < 2))
			return node;
		return (Node *) makeFuncExpr(c->rm->st->saw_fn, v->vartype,
									 lappend(list_make5(v,
												makeConst(TEXTOID, -1, InvalidOid, -1,
														  CStringGetTextDatum(RelationGetRelationName(c->rm->rel)), false, false),
												makeConst(TEXTOID, -1, InvalidOid, -1, CStringGetTextDatum(f->name), false, false),
												makeVar(v->varno, c->id_attno, INT8OID, -1, InvalidOid, 0),
												makeVar(v->varno, c->rm->owner_attno, INT8OID, -1, InvalidOid, 0)),
											 makeBoolConst(f->rank < 2, false)),
									 v->varcollid, v->varcollid,
									 COERCE_IMPLICIT_CAST);	/* marks it as the hook's (auditread.c) */
	}
	return expression_tree_mutator(node, saw_mutator, (void *) c);
}

static void
wrap_reads(RteMask *rm, Query *q, int rti)
{
	SawCtx		c;
	ListCell   *lc;

	if (rm->st->principal == 0)
		return;
	c.rm = rm;
	c.rti = rti;
	c.id_attno = crm_attnum(RelationGetDescr(rm->rel), "id");
	if (c.id_attno <= 0)
		return;
	if (q->commandType == CMD_SELECT)
		foreach(lc, q->targetList)
		{
			TargetEntry *te = lfirst(lc);

			if (!te->resjunk)
				te->expr = (Expr *) saw_mutator((Node *) te->expr, &c);
		}
	foreach(lc, q->returningList)
	{
		TargetEntry *te = lfirst(lc);

		te->expr = (Expr *) saw_mutator((Node *) te->expr, &c);
	}
}

/* Rewrite one query level (its sub-queries first). */
static Query *mask_query(Query *q, MaskState *st);

static Node *
mask_mutator(Node *node, MaskState *st)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Query))
		return (Node *) mask_query((Query *) node, st);
	return expression_tree_mutator(node, mask_mutator, (void *) st);
}

static Query *
mask_query(Query *q, MaskState *st)
{
	int			rti = 0;
	ListCell   *lc;

	q = query_tree_mutator(q, mask_mutator, (void *) st, 0);
	if (q->commandType == CMD_UTILITY)
		return q;

	foreach(lc, q->rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);
		RteMask		rm;
		List	   *identity = NIL;
		ListCell   *lc2;

		rti++;
		if (rte->rtekind != RTE_RELATION || get_rel_namespace(rte->relid) != st->data_nsp)
			continue;
		if (q->onConflict && q->onConflict->exclRelIndex == rti)
		{
			/* EXCLUDED holds the writer's own proposed values (q may be a copy by now: mark it) */
			rt_fetch(rti, q->rtable)->security_barrier = true;
			continue;
		}
		rm.st = st;
		rm.rel = table_open(rte->relid, NoLock);
		rm.levels = crm_field_levels(st->principal, rm.rel);
		rm.owner_attno = crm_std_attnum(rm.rel, "owner_id", INT8OID);
		/* seen: the final plan check accepts only managed tables marked so */
		rt_fetch(rti, q->rtable)->security_barrier = true;
		if (!rm.levels->any_unreadable)
		{
			table_close(rm.rel, NoLock);
			continue;
		}
		if (q->commandType == CMD_MERGE && rti == q->resultRelation)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("MERGE into %s.%s is not supported for principals with masked fields",
							"crm_data", crm_short(RelationGetRelationName(rm.rel))),
					 errhint("Use INSERT ... ON CONFLICT or UPDATE.")));

		/*
		 * Every qual is masked, row security's and views' (security_barrier conditions, WITH CHECK
		 * OPTION) alike: crm's own policies read only standard columns, and walls evaluate their
		 * conditions in C on the real values.
		 */
		/* UPDATE ... SET f = f leaves a field unchanged: keep it a plain copy */
		if (q->commandType == CMD_UPDATE && rti == q->resultRelation)
			foreach(lc2, q->targetList)
			{
				TargetEntry *te = (TargetEntry *) lfirst(lc2);

				if (IsA(te->expr, Var) && ((Var *) te->expr)->varno == rti &&
					((Var *) te->expr)->varlevelsup == 0 && ((Var *) te->expr)->varattno == te->resno)
					identity = lappend_int(identity, te->resno);
			}

		q = (Query *) replace_rte_variables((Node *) q, rti, 0, replace_callback, &rm, NULL);
		rt_fetch(rti, q->rtable)->security_barrier = true;

		foreach(lc2, q->targetList)
		{
			TargetEntry *te = (TargetEntry *) lfirst(lc2);

			if (list_member_int(identity, te->resno))
			{
				Form_pg_attribute a = TupleDescAttr(RelationGetDescr(rm.rel), te->resno - 1);

				te->expr = (Expr *) makeVar(rti, te->resno, a->atttypid, a->atttypmod, a->attcollation, 0);
			}
		}
		if (rti == q->resultRelation && q->commandType == CMD_UPDATE)
			guard_assignments(&rm, q->targetList, rti, RelationGetRelationName(rm.rel));
		if (rti == q->resultRelation && q->onConflict && q->onConflict->action == ONCONFLICT_UPDATE)
			guard_assignments(&rm, q->onConflict->onConflictSet, rti, RelationGetRelationName(rm.rel));
		wrap_reads(&rm, q, rti);
		/* are those calls all that reads its sensitive fields? (what READ_SENSITIVE records) */
		crm_auditread_mark(q, rti, rm.rel, rm.levels, st->principal != 0 ? st->saw_fn : InvalidOid);
		table_close(rm.rel, NoLock);
	}
	return q;
}

/* --- hooks --------------------------------------------------------------------------------------- */

static bool
masking_possible(MaskState *st)
{
	uint32		sig;

	if (!IsTransactionState() || IsParallelWorker() || crm_internal_depth > 0)
		return false;
	st->data_nsp = get_namespace_oid("crm_data", true);
	if (!OidIsValid(st->data_nsp) || !crm_installed())
		return false;
	sig = current_sig(&st->principal);
	if (planning_depth <= 1)
	{
		if (planned_sig_valid && sig != planned_sig)
			ResetPlanCache();
		planned_sig = sig;
		planned_sig_valid = true;
	}
	if (sig == SIG_MAINTENANCE)
		return false;
	if (!OidIsValid(cached_mask_fn) || !OidIsValid(cached_current_principal_fn) ||
		!OidIsValid(cached_write_denied_fn) || !OidIsValid(cached_decrypt_fn) || !OidIsValid(cached_saw_fn))
	{
		Oid			args[2] = {TEXTOID, TEXTOID};
		Oid			dargs[3] = {ANYELEMENTOID, TEXTOID, TEXTOID};
		Oid			cargs[4] = {TEXTOID, TEXTOID, TEXTOID, INT8OID};

		Oid			sargs[6] = {ANYELEMENTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, BOOLOID};

		/*
		 * Looked up into locals first: a lookup may process invalidations, whose callback resets
		 * the cached OIDs, so the cache is filled only once all five are known.
		 */
		Oid			d = LookupFuncName(list_make2(makeString("crm"), makeString("_decrypt")), 4, cargs, true);
		Oid			w = LookupFuncName(list_make2(makeString("crm"), makeString("_saw")), 6, sargs, true);
		Oid			m = LookupFuncName(list_make2(makeString("crm"), makeString("mask")), 2, args, true);
		Oid			c = LookupFuncName(list_make2(makeString("crm"), makeString("current_principal")), 0, NULL, true);
		Oid			wd = LookupFuncName(list_make2(makeString("crm"), makeString("_write_denied")), 3, dargs, true);

		st->decrypt_fn = d;
		st->saw_fn = w;
		st->mask_fn = m;
		st->current_principal_fn = c;
		st->write_denied_fn = wd;
		cached_decrypt_fn = d;
		cached_saw_fn = w;
		cached_mask_fn = m;
		cached_current_principal_fn = c;
		cached_write_denied_fn = wd;
	}
	else
	{
		st->mask_fn = cached_mask_fn;
		st->current_principal_fn = cached_current_principal_fn;
		st->write_denied_fn = cached_write_denied_fn;
		st->decrypt_fn = cached_decrypt_fn;
		st->saw_fn = cached_saw_fn;
	}
	if (!OidIsValid(st->mask_fn) || !OidIsValid(st->current_principal_fn) || !OidIsValid(st->write_denied_fn) ||
		!OidIsValid(st->decrypt_fn) || !OidIsValid(st->saw_fn))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("crm's masking functions are missing from schema crm"),
				 errhint("Reinstall the extension (ALTER EXTENSION crm UPDATE, or DROP and CREATE).")));
	return OidIsValid(st->mask_fn) && OidIsValid(st->current_principal_fn) && OidIsValid(st->write_denied_fn) &&
		OidIsValid(st->decrypt_fn);
}

/* Does a query (or anything inside it) read a table in crm_data? A cheap walk before rewriting. */
static bool
reaches_data_walker(Node *node, Oid *nsp)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		return rte->rtekind == RTE_RELATION && get_rel_namespace(rte->relid) == *nsp;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, reaches_data_walker, (void *) nsp, QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, reaches_data_walker, (void *) nsp);
}

/*
 * Managed tables in a range table; with unmarked_only, those the rewrite did not see. (The
 * rewrite marks each managed table's entry with security_barrier, a flag PostgreSQL reads only
 * for sub-queries; copies of the entry keep it.)
 */
static int
count_protected(List *rtable, MaskState *st, bool unmarked_only)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, rtable)
	{
		RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

		if (rte->rtekind == RTE_RELATION && get_rel_namespace(rte->relid) == st->data_nsp &&
			!(unmarked_only && rte->security_barrier))
			n++;
	}
	return n;
}

static PlannedStmt *
crm_planner(Query *parse, const char *query_string, int cursorOptions, ParamListInfo boundParams)
{
	MaskState	st;
	MaskState  *saved = mask_state;
	PlannedStmt *volatile result = NULL;
	Query	   *volatile query = parse;
	volatile bool active;

	memset(&st, 0, sizeof(st));
	planning_depth++;
	PG_TRY();
	{
		active = masking_possible(&st);
		if (active)
		{
			/*
			 * Rewrite only queries that reach crm_data; but stay armed for SQL functions inlined
			 * while planning, whose queries the post-analyze hook rewrites.
			 */
			if (reaches_data_walker((Node *) query, &st.data_nsp))
				query = mask_query(query, &st);
			mask_state = &st;
		}
		else
			mask_state = NULL;
		if (prev_planner)
			result = prev_planner(query, query_string, cursorOptions, boundParams);
		else
			result = standard_planner(query, query_string, cursorOptions, boundParams);

		/*
		 * Every managed table in the plan must have been seen by the rewrite (here, or for a SQL
		 * function inlined while planning, in the post-analyze hook). One that was not came in
		 * some other way: refuse rather than serve it unmasked.
		 */
		if (active && count_protected(result->rtable, &st, true) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("this query reads a crm_data table in a way crm cannot mask"),
					 errdetail("A SQL function inlined into the query reads a managed table through a view, or has a BEGIN ATOMIC body."),
					 errhint("Query the table or view directly, or write the function in PL/pgSQL.")));
	}
	PG_FINALLY();
	{
		planning_depth--;
		mask_state = saved;
	}
	PG_END_TRY();
	return result;
}

/* SQL functions inlined while planning are analyzed anew: mask their queries too. */
static void
crm_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	if (prev_post_parse_analyze)
		prev_post_parse_analyze(pstate, query, jstate);
	if (mask_state != NULL && planning_depth > 0 &&
		reaches_data_walker((Node *) query, &mask_state->data_nsp))
	{
		Query	   *masked = mask_query(query, mask_state);

		if (masked != query)
			memcpy(query, masked, sizeof(Query));
	}
}

/* A plan made for an actor with other field levels must not run for this one. */
static void
crm_masking_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	bool		touches = false;

	if (IsTransactionState() && !IsParallelWorker() && crm_internal_depth == 0 &&
		!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
	{
		Oid			nsp = get_namespace_oid("crm_data", true);
		MaskState	st;

		memset(&st, 0, sizeof(st));
		st.data_nsp = nsp;
		touches = OidIsValid(nsp) && count_protected(queryDesc->plannedstmt->rtable, &st, false) > 0 &&
			crm_installed();
		if (touches && planned_sig_valid)
		{
			int64		p;
			uint32		sig = current_sig(&p);

			/* nobody sees no rows at all, so a plan made for another actor shows it nothing */
			if (sig != planned_sig && sig != 0)
			{
				ResetPlanCache();
				planned_sig_valid = false;
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("the acting principal changed since this statement was planned"),
						 errhint("Run the statement again.")));
			}
		}
	}
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
	if (touches)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		OpenQuery  *oq = palloc(sizeof(OpenQuery));

		oq->qd = queryDesc;
		oq->nest_level = GetCurrentTransactionNestLevel();
		open_data_queries = lappend(open_data_queries, oq);
		MemoryContextSwitchTo(old);
		crm_auditread_start();
	}
}

static void
forget_open_queries(QueryDesc *qd, int from_level)
{
	ListCell   *lc;

	foreach(lc, open_data_queries)
	{
		OpenQuery  *oq = (OpenQuery *) lfirst(lc);

		if ((qd != NULL && oq->qd == qd) || (qd == NULL && oq->nest_level >= from_level))
		{
			open_data_queries = foreach_delete_current(open_data_queries, lc);
			pfree(oq);
			if (qd != NULL)
				break;
		}
	}
}

static void
crm_masking_ExecutorEnd(QueryDesc *queryDesc)
{
	ListCell   *lc;

	foreach(lc, open_data_queries)
		if (((OpenQuery *) lfirst(lc))->qd == queryDesc)
		{
			crm_auditread_end(queryDesc);
			break;
		}
	forget_open_queries(queryDesc, 0);
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

static void
crm_masking_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PREPARE)
	{
		/* portals that failed are dropped without ExecutorEnd */
		list_free_deep(open_data_queries);
		open_data_queries = NIL;
		/* what they read before failing was read all the same */
		crm_auditread_abort();
	}
}

static void
crm_masking_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	/* queries of an aborted subtransaction end without ExecutorEnd */
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget_open_queries(NULL, GetCurrentTransactionNestLevel());
	/* those of a released one now belong to its parent */
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		ListCell   *lc;
		int			level = GetCurrentTransactionNestLevel();

		foreach(lc, open_data_queries)
		{
			OpenQuery  *oq = (OpenQuery *) lfirst(lc);

			if (oq->nest_level >= level)
				oq->nest_level = level - 1;
		}
	}
}

bool
crm_data_queries_open(void)
{
	return open_data_queries != NIL;
}

/*
 * DECLARE ... WITH HOLD over crm_data would keep one actor's rows (masked for that actor) in the
 * session after its transaction, for whoever acts next on a pooled connection: refuse it.
 */
void
crm_masking_check_utility(Node *stmt)
{
	DeclareCursorStmt *dc;
	Oid			nsp;

	if (!IsA(stmt, DeclareCursorStmt))
		return;
	dc = (DeclareCursorStmt *) stmt;
	if (!(dc->options & CURSOR_OPT_HOLD) || superuser() || has_bypassrls_privilege(GetUserId()))
		return;
	nsp = get_namespace_oid("crm_data", true);
	if (OidIsValid(nsp) && dc->query && reaches_data_walker(dc->query, &nsp))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cursors WITH HOLD over crm_data tables are not allowed"),
				 errdetail("Their rows would outlive the transaction and the acting principal."),
				 errhint("Declare the cursor without HOLD inside the transaction.")));
}

void
crm_masking_init(void)
{
	prev_planner = planner_hook;
	planner_hook = crm_planner;
	prev_post_parse_analyze = post_parse_analyze_hook;
	post_parse_analyze_hook = crm_post_parse_analyze;
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = crm_masking_ExecutorStart;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = crm_masking_ExecutorEnd;
	RegisterXactCallback(crm_masking_xact_callback, NULL);
	RegisterSubXactCallback(crm_masking_subxact_callback, NULL);
}
