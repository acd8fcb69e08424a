-- Feature snapshot timestamps: the test cutoff is the first day of the final window (the last
-- $window_days days of data); earlier cutoffs step back one window at a time; the last snapshot
-- is the day after the data ends (what serving sees). Every feature at snapshot T is computed
-- from orders strictly before T.
CREATE OR REPLACE TEMP TABLE snapshots AS
WITH bounds AS (SELECT max(order_ts)::DATE + 1 AS data_end FROM raw_pos.order_header)
SELECT (data_end - INTERVAL (k * $window_days) DAY)::TIMESTAMP AS ts, k AS windows_before_end
FROM bounds, range(0, $windows + 1) AS r(k);
