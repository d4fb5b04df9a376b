-- Score card: one pharmacy's five key metrics for one pay period, against its peer group
-- (pooled peer average, rank among peers with a value, and the two pacesetters).
-- Edit the pharmacy (node) and the pay period to taste.
WITH card AS (
  SELECT * FROM cube.metrics
  WHERE level = 'pharmacy' AND grain = 'pay_period'
    AND period_start = TIMESTAMP '2024-02-18 00:00:00'
    AND metric IN ('labor_cost_per_rx', 'csat_pct', 'on_time_pct', 'otc_sales_per_rx', 'crp_usage_pct')
),
pacesetters AS (
  SELECT metric, peer_group,
         string_agg(node, ', ' ORDER BY node) FILTER (WHERE peer_rank = 1) AS first,
         string_agg(node, ', ' ORDER BY node) FILTER (WHERE peer_rank = 2) AS second
  FROM card GROUP BY metric, peer_group
)
SELECT c.metric, round(c.value, 2) AS value, round(c.peer_avg, 2) AS peer_avg,
       c.peer_rank, c.peer_size, c.peer_group,
       p.first AS pacesetter_1, p.second AS pacesetter_2
FROM card c JOIN pacesetters p ON p.metric = c.metric AND p.peer_group = c.peer_group
WHERE c.node = 'RX101'
ORDER BY c.metric;
