-- Budget estimator: the labor budget of one pharmacy for a coming pay period that meets each
-- labor-cost-per-Rx target tier, from its recent Rx volume and cost per hour.
SELECT tier, target_labor_cost_per_rx, round(expected_rx) AS expected_rx,
       round(cost_per_hour, 2) AS cost_per_hour, round(budget_dollars, 2) AS budget_dollars,
       round(budget_hours, 1) AS budget_hours
FROM cube.budget
WHERE node = 'RX101' AND period_start = TIMESTAMP '2024-03-17 00:00:00'
ORDER BY tier;
