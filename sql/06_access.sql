-- Record-level access API: grants, shares, walls, explain_access, access_review, and their refusals.
\set VERBOSITY terse
-- roles a run that was cut short may have left behind (sql/99_teardown.sql drops them after a full run)
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_acc_tl, regress_acc_rm;
RESET client_min_messages;
SELECT role, object, privilege, scope FROM crm.object_grant WHERE builtin ORDER BY role, privilege;
SELECT crm.add_org_unit('Access HQ') AS hq \gset
SELECT crm.add_org_unit('Access Team', :hq, 'team') AS team \gset
CREATE ROLE regress_acc_tl LOGIN;
CREATE ROLE regress_acc_rm LOGIN;
SELECT crm.add_principal('regress_acc_tl', 'TL', :team, ARRAY['team_lead']) AS tl \gset
SELECT crm.add_principal('regress_acc_rm', 'RM', :team, ARRAY['rm'], :tl) AS rm \gset
INSERT INTO crm_data.customer (owner_id, name, segment) VALUES (:rm, '客户甲', 'mass') RETURNING id AS c \gset

-- grants
SELECT crm.grant_object('rm', 'product', ARRAY['read', 'read', 'edit'], 'org_unit');
SELECT privilege, scope FROM crm.object_grant WHERE role = 'rm' AND object = 'product' ORDER BY 1;
SELECT crm.revoke_object('rm', 'product', ARRAY['edit']);
SELECT crm.revoke_object('rm', 'product', ARRAY['read'], 'own');
SELECT crm.revoke_object('rm', 'product', ARRAY['read']);
SELECT crm.grant_object('wizard', 'customer', ARRAY['read'], 'own');
SELECT crm.grant_object('rm', 'nothing', ARRAY['read'], 'own');
SELECT crm.grant_object('rm', 'customer', ARRAY['peek'], 'own');
SELECT crm.grant_object('rm', 'customer', ARRAY[]::text[], 'own');
SELECT crm.grant_object('rm', 'customer', ARRAY['read'], 'galaxy');
SELECT crm.revoke_object('rm', 'nothing', ARRAY['read']);

-- shares
SELECT crm.share('customer', :c, 'regress_acc_tl', 'read', now() + interval '7 days', 'holiday cover') > 0 AS shared;
SELECT crm.share('customer', :c, 'unit:' || :hq, 'read', NULL, 'branch-wide campaign') > 0 AS shared_with_unit;
SELECT object, principal_id = :tl AS to_tl, org_unit_id = :hq AS to_hq, access, expires_at IS NOT NULL AS expires, reason
  FROM crm.record_share WHERE record_id = :c ORDER BY id;
SELECT crm.share('customer', :c, 'regress_acc_tl', 'write', NULL, 'x');
SELECT crm.share('customer', :c, 'regress_acc_tl', 'read', NULL, ' ');
SELECT crm.share('customer', :c, 'regress_acc_tl', 'read', '2000-01-01 00:00+00', 'late');
SELECT crm.share('customer', 424242, 'regress_acc_tl', 'read', NULL, 'x');
SELECT crm.share('customer', :c, 'nobody_at_all', 'read', NULL, 'x');
SELECT crm.share('customer', :c, 'unit:424242', 'read', NULL, 'x');
SELECT crm.share('customer', :c, 'principal:424242', 'read', NULL, 'x');
SELECT crm.share('nothing', :c, 'regress_acc_tl', 'read', NULL, 'x');
SELECT crm.unshare('customer', :c, 'unit:' || :hq);
SELECT count(*) AS shares_left FROM crm.record_share WHERE record_id = :c;

-- walls: conditions are checked when defined
SELECT crm.add_wall('ib', 'customer', $$segment = 'corporate'$$, ARRAY[:tl]::bigint[], '{}', ARRAY['compliance'], 'IB clients');
SELECT name, object, condition, cardinality(principals) AS principals, roles, reason FROM crm.wall;
SELECT polname, polpermissive FROM pg_policy WHERE polrelid = 'crm_data.customer'::regclass ORDER BY 1;
SELECT polname FROM pg_policy WHERE polrelid = 'crm_data.holding'::regclass AND polname LIKE 'crm_wall%';
SELECT crm.add_wall('ib', 'customer', 'true', ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$nosuchfield = 1$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$segment = (SELECT min(name) FROM crm_data.customer)$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$random() > 0.5$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$aum + 1$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$count(*) > 1$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$true) FROM crm_data.customer, crm.principal --$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$true; DROP TABLE crm_data.customer$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$segment = 'x' OR (1 = 1$$, ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', $$true) OR (true$$, ARRAY[:tl]::bigint[]) IS NOT NULL AS balanced_parentheses_are_one_expression;
SELECT crm.drop_wall('ib2');
SELECT crm.add_wall('ib2', 'customer', '', ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', 'true');
SELECT crm.add_wall('ib2', 'customer', 'true', ARRAY[424242]::bigint[]);
SELECT crm.add_wall('ib2', 'customer', 'true', '{}', '{}', ARRAY['wizard']);
SELECT crm.add_wall('ib2', 'nothing', 'true', ARRAY[:tl]::bigint[]);
SELECT crm.add_wall('Bad Name', 'customer', 'true', ARRAY[:tl]::bigint[]);
SELECT crm.drop_wall('nothing');
SELECT count(*) AS walls FROM crm.wall;

-- explain_access and access_review
UPDATE crm_data.customer SET segment = 'corporate' WHERE id = :c;
SELECT privilege, allowed, regexp_replace(array_to_string(because, E'\n'), 'until [^,]*,', 'until (in 7 days),') AS because
  FROM crm.explain_access(:tl, 'customer', :c);
SELECT privilege, allowed FROM crm.explain_access(:rm, 'customer', :c);
SELECT crm.explain_access(:rm, 'customer', 424242);
SELECT login, object, can_read, can_edit FROM crm.access_review(:team) WHERE object IN ('customer', 'product') ORDER BY login, object;
SET ROLE regress_acc_rm;
SELECT count(*) FROM crm.explain_access(:rm, 'customer', :c) AS own_explanation;
SELECT crm.explain_access(:tl, 'customer', :c);
SELECT crm.access_review(:team);
SELECT crm.grant_object('rm', '*', ARRAY['read'], 'all');
SELECT crm.add_wall('mine', 'customer', 'true', '{}', '{}', ARRAY['team_lead']);
INSERT INTO crm.object_grant VALUES ('rm', '*', 'read', 'all');
DELETE FROM crm.wall;
RESET ROLE;
SELECT crm.drop_wall('ib');
SELECT count(*) AS wall_policies_left FROM pg_policy WHERE polname LIKE 'crm_wall%';
