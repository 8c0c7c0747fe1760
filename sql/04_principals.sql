-- Principals and the org tree: admin functions and their refusals.
\set VERBOSITY terse
-- roles a run that was cut short may have left behind (sql/99_teardown.sql drops them after a full run)
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_bm, regress_tl, regress_rm, regress_super, regress_new;
RESET client_min_messages;
SELECT crm.add_org_unit('Bank HQ', NULL, 'head_office') AS hq \gset
SELECT crm.add_org_unit('Shanghai Branch', :hq, 'branch') AS sh \gset
SELECT crm.add_org_unit('Pudong Sub-branch', :sh, 'sub_branch') AS pd \gset
SELECT crm.add_org_unit('Team A', :pd) AS team_a \gset
SELECT crm.add_org_unit('Beijing Branch', :hq, 'branch') AS bj \gset
SELECT name, kind, parent_id = :hq AS under_hq FROM crm.org_unit WHERE id IN (:hq, :sh, :pd, :team_a, :bj) ORDER BY id;
SELECT crm.add_org_unit('', :hq);
SELECT crm.add_org_unit('Team B', 424242);
SELECT crm.add_org_unit('Team C', :hq, 'department');
SELECT crm.add_org_unit('Shanghai Branch', :hq, 'branch');
-- moving: not under itself or below it
SELECT crm.move_org_unit(:sh, :team_a);
SELECT crm.move_org_unit(:sh, :sh);
SELECT crm.move_org_unit(:pd, :bj);
SELECT parent_id = :bj AS moved FROM crm.org_unit WHERE id = :pd;
SELECT crm.move_org_unit(424242, :bj);

-- CRM roles
SELECT crm.add_role('wealth_advisor', 'Wealth advisor');
SELECT crm.add_role('wealth_advisor');
SELECT crm.add_role('Wealth Advisor');
SELECT crm.add_role('rm');
SELECT crm.drop_role('rm');
SELECT crm.drop_role('nothing');

-- principals
CREATE ROLE regress_bm LOGIN;
CREATE ROLE regress_tl LOGIN;
CREATE ROLE regress_rm LOGIN;
CREATE ROLE regress_super SUPERUSER;
SELECT crm.add_principal('regress_bm', 'Branch Manager', :sh, ARRAY['branch_manager']) AS bm \gset
SELECT crm.add_principal('regress_tl', 'Team Lead', :team_a, ARRAY['team_lead', 'rm'], :bm) AS tl \gset
SELECT crm.add_principal('regress_rm', '李四', :team_a, ARRAY['rm', 'wealth_advisor'], :tl) AS rm \gset
SELECT login, display_name, org_unit, manager_id = :tl AS reports_to_tl, roles, active FROM crm.principals WHERE id = :rm;
SELECT pg_has_role('regress_rm', 'crm_user', 'MEMBER') AS is_crm_user;
SELECT crm.drop_role('wealth_advisor');
SELECT crm.add_principal('regress_nobody', 'x', :sh);
SELECT crm.add_principal('regress_rm', 'again', :sh);
SELECT crm.add_principal('regress_super', 'root', :sh);
SELECT crm.add_principal('crm_admin', 'group', :sh);
SELECT crm.add_principal('regress_bm', '', :sh);
CREATE ROLE regress_new LOGIN;
SELECT crm.add_principal('regress_new', 'New', 424242);
SELECT crm.add_principal('regress_new', 'New', :sh, ARRAY['wizard']);
SELECT crm.add_principal('regress_new', 'New', :sh, ARRAY[]::text[]);
SELECT crm.add_principal('regress_new', 'New', :sh, ARRAY['rm'], 424242);
SELECT count(*) AS half_made FROM crm.principal WHERE login = 'regress_new';
-- reporting lines: no cycles
SELECT crm.set_manager(:bm, :rm);
SELECT crm.set_manager(:rm, :rm);
SELECT crm.set_manager(:rm, :bm);
SELECT manager_id = :bm AS now_reports_to_bm FROM crm.principal WHERE id = :rm;
SELECT crm.move_principal(:rm, :bj);
SELECT crm.move_principal(:rm, 424242);
SELECT crm.move_principal(424242, :bj);
SELECT crm.set_principal_roles(:rm, ARRAY['rm']);
SELECT crm.set_principal_roles(:rm, ARRAY['wizard']);
SELECT roles, org_unit FROM crm.principals WHERE id = :rm;
SELECT crm.drop_role('wealth_advisor');
SELECT count(*) AS wealth_advisor_left FROM crm.role WHERE name = 'wealth_advisor';
-- deactivated principals are nobody
SELECT crm.deactivate_principal(:rm);
SET ROLE regress_rm;
SELECT crm.current_principal() IS NULL AS deactivated_is_nobody;
RESET ROLE;
SELECT crm.reactivate_principal(:rm);
SET ROLE regress_rm;
SELECT crm.current_principal() = :rm AS reactivated;
-- principals cannot administer
SELECT crm.add_org_unit('Rogue', NULL);
SELECT crm.add_principal('regress_new', 'New', 1);
SELECT crm.set_principal_roles(:rm, ARRAY['admin']);
UPDATE crm.principal SET active = true;
INSERT INTO crm.principal_role VALUES (:rm, 'admin');
RESET ROLE;
SELECT roles FROM crm.principals WHERE id = :rm;
