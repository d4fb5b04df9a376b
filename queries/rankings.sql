-- Winners and losers at every level: the regions ranked on each key metric for one pay period,
-- and within each region its service areas (rank 1 = best; ties share a rank).
SELECT level, group_name AS parent, rank, node, round(value, 2) AS value, group_size,
       pacesetter_1, pacesetter_2, metric
FROM cube.rankings
WHERE level IN ('region', 'service_area') AND grain = 'pay_period' AND ranked_among = 'siblings'
  AND period_start = TIMESTAMP '2024-02-18 00:00:00'
  AND metric IN ('labor_cost_per_rx', 'csat_pct', 'on_time_pct', 'otc_sales_per_rx', 'crp_usage_pct')
ORDER BY metric, level DESC, parent, rank NULLS LAST, node;
