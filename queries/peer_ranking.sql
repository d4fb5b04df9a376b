-- Peer ranking: every pharmacy ranked on on-time processing within its peer group for one pay
-- period (rank 1 = best; ties share a rank; pharmacies without local fills are unranked).
SELECT peer_group, peer_rank, node AS pharmacy, round(value, 1) AS on_time_pct,
       round(peer_avg, 1) AS peer_avg, peer_size
FROM cube.metrics
WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'on_time_pct'
  AND period_start = TIMESTAMP '2024-02-18 00:00:00'
ORDER BY peer_group, peer_rank NULLS LAST, pharmacy;
