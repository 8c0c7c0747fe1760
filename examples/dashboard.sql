-- A sample dashboard over crm_report (point Metabase, Superset or Grafana at these; each viewer
-- sees only its own rows, masked). scripts/render_dashboard.py draws them as SVG charts.

-- name: funnel
-- title: Sales funnel: opportunities that reached each stage
SELECT stage, sum(reached)::bigint AS value
  FROM crm_report.sales_funnel GROUP BY stage, stage_order ORDER BY stage_order;

-- name: aum_by_branch
-- title: AUM by branch (CNY millions, rolled up the org tree)
SELECT org_unit AS label, round(aum / 1e6, 1) AS value
  FROM crm_report.aum_by_org_unit WHERE kind = 'branch' ORDER BY aum DESC;

-- name: rm_league
-- title: RM league table: top 10 by AUM (CNY millions)
SELECT display_name AS label, round(aum / 1e6, 1) AS value
  FROM crm_report.rm_performance ORDER BY aum DESC, principal_id LIMIT 10;

-- name: approval_cycle
-- title: Approval cycle time per step (median hours)
SELECT workflow || ': ' || step || coalesce('.' || branch, '') AS label, round(avg(median_hours)::numeric, 1) AS value
  FROM crm.approval_cycle_times WHERE decided > 0 GROUP BY workflow, step, branch ORDER BY 1;
