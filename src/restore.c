/*
 * restore.c: what lets every restore path (pg_restore serial, -j N, --single-transaction, a plain
 * SQL dump through psql) load a dump of a database that uses crm.
 *
 * crm's catalogs (crm.principal, crm.field, ...) are extension members whose rows pg_dump keeps
 * (pg_extension_config_dump): CREATE EXTENSION makes them, with their foreign keys, before the
 * dump's rows arrive. A serial restore loads their rows in an order that satisfies those keys; a
 * parallel one (-j) does not: it loads the biggest tables first and does not wait for the rows a
 * catalog refers to, nor for the catalogs that the business tables' foreign keys (crm_fk_owner,
 * crm_fk_org_unit) refer to before adding them. So, in a restore session only (a superuser with
 * row_security = off, which pg_dump's scripts and pg_restore always set):
 *  - COPY into one of crm's catalogs runs with session_replication_role = replica, so their
 *    foreign keys are not checked row by row (as pg_restore --disable-triggers does; crm's own
 *    triggers fire ALWAYS, so they still run);
 *  - a foreign key added to a table that refers to one of crm's catalogs is added without
 *    re-checking the rows already there (as CREATE TABLE adds one).
 * Both trust the dump, which pg_dump took from one consistent snapshot of a database where these
 * keys held. A superuser could do either by hand.
 *
 * The audit log's tables are not extension members: the dump makes them. A parallel restore
 * truncates each table it made before loading it; that is allowed while the table is empty
 * (crm_audit_rel_is_empty), and refused as before once it holds anything.
 */
#include "crm.h"

#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"

/* a superuser's session with row security off: what pg_restore and pg_dump's scripts run as */
static bool
restore_session(void)
{
	return !row_security && superuser();
}

/* Is relid one of the crm extension's own tables (a catalog whose rows pg_dump keeps)? */
static bool
is_crm_catalog(Oid relid)
{
	Oid			ext = get_extension_oid("crm", true);

	return OidIsValid(relid) && OidIsValid(ext) && get_rel_relkind(relid) == RELKIND_RELATION &&
		getExtensionOfObject(RelationRelationId, relid) == ext;
}

/*
 * An audit table that holds nothing, taking the lock TRUNCATE would take first (so no writer can
 * add an entry between this check and the TRUNCATE): the table and, for the partitioned log,
 * every partition have no pages at all. A parallel restore truncates the tables it has just made.
 */
bool
crm_audit_rel_is_empty(Oid relid)
{
	List	   *rels = find_all_inheritors(relid, AccessExclusiveLock, NULL);
	ListCell   *lc;

	foreach(lc, rels)
	{
		Oid			r = lfirst_oid(lc);
		Relation	rel;
		bool		empty;

		if (!RELKIND_HAS_STORAGE(get_rel_relkind(r)))
			continue;
		rel = table_open(r, AccessExclusiveLock);
		empty = RelationGetNumberOfBlocks(rel) == 0;
		table_close(rel, NoLock);
		if (!empty)
			return false;
	}
	return true;
}

/* COPY ... FROM into one of crm's catalogs, in a restore session: run it without FK checks */
bool
crm_restore_copy_unchecked(Node *stmt)
{
	CopyStmt   *c;

	if (!IsA(stmt, CopyStmt))
		return false;
	c = (CopyStmt *) stmt;
	return c->is_from && c->relation != NULL && restore_session() &&
		is_crm_catalog(RangeVarGetRelid(c->relation, NoLock, true));
}

/* Does this ALTER TABLE add a foreign key to one of crm's catalogs? (restore sessions only) */
bool
crm_restore_fk_to_catalog(Node *stmt)
{
	ListCell   *lc;

	if (!IsA(stmt, AlterTableStmt) || !restore_session())
		return false;
	foreach(lc, ((AlterTableStmt *) stmt)->cmds)
	{
		AlterTableCmd *cmd = (AlterTableCmd *) lfirst(lc);
		Constraint *con = (Constraint *) cmd->def;

		if (cmd->subtype == AT_AddConstraint && con != NULL && IsA(con, Constraint) &&
			con->contype == CONSTR_FOREIGN && con->initially_valid && con->pktable != NULL &&
			is_crm_catalog(RangeVarGetRelid(con->pktable, NoLock, true)))
			return true;
	}
	return false;
}

/* ... and mark those foreign keys as added without re-checking the rows (a copied tree) */
void
crm_restore_skip_fk_check(Node *stmt)
{
	ListCell   *lc;

	foreach(lc, ((AlterTableStmt *) stmt)->cmds)
	{
		AlterTableCmd *cmd = (AlterTableCmd *) lfirst(lc);
		Constraint *con = (Constraint *) cmd->def;

		if (cmd->subtype == AT_AddConstraint && con != NULL && IsA(con, Constraint) &&
			con->contype == CONSTR_FOREIGN && con->initially_valid && con->pktable != NULL &&
			is_crm_catalog(RangeVarGetRelid(con->pktable, NoLock, true)))
			con->skip_validation = true;
	}
}
