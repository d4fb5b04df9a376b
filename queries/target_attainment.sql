-- Target attainment: every pharmacy's key metrics for one pay period against its peer group's
-- tiers (in effect on the period's last day), with the bonus earned per pharmacy.
SELECT node AS pharmacy, peer_group, metric, round(value, 2) AS value,
       string_agg(CASE WHEN attained THEN tier_name END, ', ' ORDER BY tier) AS tiers_attained,
       sum(bonus_earned) AS bonus_earned
FROM cube.attainment
WHERE grain = 'pay_period' AND period_start = TIMESTAMP '2024-02-18 00:00:00'
GROUP BY node, peer_group, metric, value
ORDER BY node, metric;
