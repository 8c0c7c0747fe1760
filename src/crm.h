/*
 * crm.h: declarations shared by crm's C sources, split by the file that owns them.
 */
#ifndef CRM_H
#define CRM_H

#include "postgres.h"
#include "fmgr.h"

/* crm.c: module state */
extern bool crm_is_preloaded;

/* crm.c: run fixed, schema-qualified SPI as the owner of crm's catalogs */
typedef struct CrmUserSwitch
{
	Oid			save_userid;
	int			save_sec_context;
} CrmUserSwitch;
extern Oid	crm_catalog_owner(void);
extern void crm_switch_to_owner(CrmUserSwitch *sw);
extern void crm_restore_user(CrmUserSwitch *sw);
extern void crm_watch_catalogs(void);
extern bool crm_query_row_as_owner(const char *sql, int nargs, Oid *argtypes, Datum *values,
								   Datum *out, bool *outnull, int nout);

/* acl.c: record-level access cache */
extern void crm_acl_reset(void);

/* guard.c: field write guard cache */
extern void crm_guard_reset(void);

/* hooks.c: executor and utility hooks (preloaded only) */
extern void crm_hooks_init(void);

/* identity.c: the acting principal */
extern int64 crm_current_principal(bool *found);
extern void crm_identity_init(void);
extern void crm_identity_reset(void);

/* validate.c: validators return NULL when the value is good, else the reason */
extern const char *crm_cn_id_number_problem(const char *s, size_t len);
extern const char *crm_uscc_problem(const char *s, size_t len);
extern const char *crm_bank_card_problem(const char *s, size_t len);
extern const char *crm_cn_mobile_problem(const char *s, size_t len);
extern const char *crm_email_problem(const char *s, size_t len);

#endif							/* CRM_H */
