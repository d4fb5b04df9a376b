-- Diagnostic: weekly on-time processing, CRP usage and OTC sales per Rx of one pharmacy for the
-- six months before a day.
SELECT CAST(period_start AS DATE) AS week, round(on_time_pct, 1) AS on_time_pct,
       round(crp_usage_pct, 1) AS crp_usage_pct, round(otc_sales_per_rx, 2) AS otc_sales_per_rx
FROM cube.weekly_trend
WHERE level = 'pharmacy' AND node = 'RX101'
  AND period_start > TIMESTAMP '2024-03-16 00:00:00' - INTERVAL '6 months'
  AND period_start <= TIMESTAMP '2024-03-16 00:00:00'
ORDER BY week;
