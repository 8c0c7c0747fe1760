/*
 * copies_int.h: what copies.c (copies made by utility statements, the checks) and copywrite.c
 * (copies made by writes, cursors) share. Not for other files.
 */
#ifndef CRM_COPIES_INT_H
#define CRM_COPIES_INT_H

#include "executor/execdesc.h"

/* A relation being filled: CREATE TABLE AS / SELECT INTO / a materialized view, or a write (copywrite.c). */
typedef struct CrmCopyFrame
{
	const char *what;			/* the statement, for messages and events */
	char	   *target;			/* the relation being filled (qualified when known) */
	RangeVar   *rv;				/* its name, to find it afterwards */
	Oid			relid;			/* or its OID (a write: INSERT, UPDATE, DELETE, MERGE) */
	QueryDesc  *qd;				/* the write's own query */
	bool		temp;
	bool		allowed;		/* temporary, or made by the maintenance role */
	bool		read_data;		/* a crm_data table was read while filling it */
	List	   *sources;		/* OIDs of the crm_data tables read */
	uint64		rows;
	struct CrmCopyFrame *prev;
} CrmCopyFrame;

typedef struct ReachCtx
{
	Oid			nsp;
	bool		select_only;	/* follow only views' SELECT rules (what reading a relation runs) */
	List	   *visiting;		/* relations whose rules are being walked (a rule names its own relation) */
	Oid			found;			/* the crm_data table reached */
} ReachCtx;

extern CrmCopyFrame *cp_copy_top;

extern Oid	cp_data_nsp(void);
extern bool cp_crm_ready(void);
extern bool cp_is_maintenance(void);
extern char *cp_qualified(Oid relid);
extern bool cp_rel_reaches(Oid relid, ReachCtx *cx);
extern bool cp_is_temp_copy(Oid relid);
extern void cp_check_copy_sources(QueryDesc *qd, CrmCopyFrame *own);
extern void cp_copy_done(CrmCopyFrame *f);

extern CrmCopyFrame *cp_push_fill(Node *stmt);
extern void cp_check_data_portals(CrmCopyFrame *f);
extern void cp_note_data_portal(QueryDesc *qd);
extern void cp_start_write(QueryDesc *qd);
extern void cp_forget_write(QueryDesc *qd);
extern bool cp_ri_query(void);

#endif
