-- Region consolidation by month: the five key metrics pooled over every pharmacy in each
-- region as it was organized on each event's local date.
SELECT node AS region, CAST(period_start AS DATE) AS month,
       round(max(value) FILTER (WHERE metric = 'labor_cost_per_rx'), 2) AS labor_cost_per_rx,
       round(max(value) FILTER (WHERE metric = 'csat_pct'), 1) AS csat_pct,
       round(max(value) FILTER (WHERE metric = 'on_time_pct'), 1) AS on_time_pct,
       round(max(value) FILTER (WHERE metric = 'otc_sales_per_rx'), 2) AS otc_sales_per_rx,
       round(max(value) FILTER (WHERE metric = 'crp_usage_pct'), 1) AS crp_usage_pct
FROM cube.metrics
WHERE level = 'region' AND grain = 'month'
  AND metric IN ('labor_cost_per_rx', 'csat_pct', 'on_time_pct', 'otc_sales_per_rx', 'crp_usage_pct')
GROUP BY node, period_start
ORDER BY region, month;
