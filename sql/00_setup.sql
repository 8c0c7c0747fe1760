-- Runs first. make installcheck may run against any server with crm preloaded.
-- The roles the tests make (test/installcheck.sh checks that this list names them all): drop
-- those a run that was cut short left behind.
SET client_min_messages = warning;
DROP ROLE IF EXISTS
  regress_acc_rm, regress_acc_tl, regress_an_bma, regress_an_bmb, regress_an_comp,
  regress_an_rm1, regress_an_rm2, regress_bm, regress_ds_app, regress_ds_comp, regress_ds_int,
  regress_ds_rm, regress_ds_rm2, regress_fa_comp, regress_fa_rm, regress_fa_tl, regress_new,
  regress_owner1, regress_rl_admin, regress_rl_bm, regress_rl_connector, regress_rl_rm,
  regress_rl_rm2, regress_rl_tl, regress_rl_user, regress_rm, regress_stamp_app,
  regress_stamp_rm, regress_super, regress_tl, regress_wf_admin, regress_wf_bm, regress_wf_cc1,
  regress_wf_cc2, regress_wf_cc3, regress_wf_comp, regress_wf_hom, regress_wf_hq,
  regress_wf_risk, regress_wf_rm, regress_wf_user;
RESET client_min_messages;
-- then note which regress_* and crm_* roles exist (the database's comment, dropped with it):
-- sql/99_teardown.sql drops the others, and nothing that was there before
DO $$
BEGIN
  EXECUTE pg_catalog.format('COMMENT ON DATABASE %I IS %L', pg_catalog.current_database(),
    'crm installcheck; roles before: ' ||
    (SELECT coalesce(pg_catalog.string_agg(r.rolname, ',' ORDER BY r.rolname), '')
       FROM pg_catalog.pg_roles r
      WHERE r.rolname LIKE 'regress\_%' OR r.rolname LIKE 'crm\_%'));
END $$;
SELECT pg_catalog.shobj_description(d.oid, 'pg_database') LIKE 'crm installcheck; roles before: %' AS noted
  FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database();
