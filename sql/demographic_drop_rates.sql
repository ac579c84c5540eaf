-- Drop rates by demographic group and reason: for each attribute value, the share of its images
-- rejected by each reason (and by any), with a Wilson 95% interval, against the rest of its
-- attribute. A group is flagged when it is dropped significantly MORE than the rest (a one-sided
-- two-proportion z above z_crit): which group does cleaning remove, and by which rule?
-- requires: scores, attributes
-- param z_crit = 3.0 in 0..100: z above which a group is flagged (3.0: about p < 0.0015 one-sided)
-- param min_images = 10 in 1..: groups with fewer images are listed but never flagged
WITH rows AS (
    SELECT v.attribute, v.value, s.keep, s.reason
    FROM scores s JOIN attributes v ON v.image_id = s.image_id
),
reasons AS (
    SELECT DISTINCT reason FROM rows WHERE NOT keep
    UNION ALL SELECT 'any'
),
groups AS (
    SELECT attribute, value, count(*) AS n FROM rows GROUP BY attribute, value
),
g AS (
    SELECT gr.attribute, gr.value, r.reason, gr.n,
           (SELECT count(*) FROM rows x WHERE x.attribute = gr.attribute AND x.value = gr.value AND NOT x.keep
              AND (r.reason = 'any' OR x.reason = r.reason)) AS k
    FROM groups gr CROSS JOIN reasons r
),
t AS (
    SELECT g.*, sum(n) OVER w AS tn, sum(k) OVER w AS tk
    FROM g WINDOW w AS (PARTITION BY attribute, reason)
),
c AS (
    SELECT *, k / n AS p, (tk - k) / nullif(tn - n, 0) AS p_rest, tk / tn AS p_pool, tn - n AS n_rest,
           1.96 AS zc
    FROM t
)
SELECT attribute, value, reason, n AS images, k AS dropped,
       round(100 * p, 2) AS pct_dropped,
       round(100 * greatest(0, (p + zc * zc / (2 * n) - zc * sqrt(p * (1 - p) / n + zc * zc / (4 * n * n))) / (1 + zc * zc / n)), 2) AS pct_lo,
       round(100 * least(1, (p + zc * zc / (2 * n) + zc * sqrt(p * (1 - p) / n + zc * zc / (4 * n * n))) / (1 + zc * zc / n)), 2) AS pct_hi,
       round(100 * p_rest, 2) AS pct_dropped_rest,
       round((p - p_rest) / nullif(sqrt(p_pool * (1 - p_pool) * (1.0 / n + 1.0 / n_rest)), 0), 2) AS z,
       n >= $min_images AND coalesce((p - p_rest) / nullif(sqrt(p_pool * (1 - p_pool) * (1.0 / n + 1.0 / n_rest)), 0), 0) > $z_crit
           AS flagged
FROM c
ORDER BY attribute, reason = 'any' DESC, reason, n DESC, value;
