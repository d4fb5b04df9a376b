-- Diagnostic: volume and processing per local hour of one day at one pharmacy: local fills,
-- on-time share and the median processing minutes.
SELECT CAST(period_start AS TIME) AS hour,
       CAST(max(value) FILTER (WHERE metric = 'local_fills') AS BIGINT) AS local_fills,
       round(max(value) FILTER (WHERE metric = 'on_time_pct'), 1) AS on_time_pct,
       round(max(value) FILTER (WHERE metric = 'median_processing_minutes'), 1) AS median_minutes
FROM cube.metrics
WHERE level = 'pharmacy' AND node = '1' AND grain = 'hour'
  AND metric IN ('local_fills', 'on_time_pct', 'median_processing_minutes')
  AND period_start >= TIMESTAMP '2024-02-20 00:00:00' AND period_start < TIMESTAMP '2024-02-21 00:00:00'
GROUP BY period_start
ORDER BY hour;
