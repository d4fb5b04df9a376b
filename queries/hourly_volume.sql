-- Diagnostic: volume and processing per local hour of one day at one pharmacy: local fills,
-- on-time share and the median processing minutes.
SELECT hour_of_day, local_fills, round(on_time_pct, 1) AS on_time_pct,
       round(median_processing_minutes, 1) AS median_minutes
FROM cube.volume
WHERE level = 'pharmacy' AND node = 'RX101' AND grain = 'hour'
  AND period_start >= TIMESTAMP '2024-02-20 00:00:00' AND period_start < TIMESTAMP '2024-02-21 00:00:00'
ORDER BY hour_of_day;
