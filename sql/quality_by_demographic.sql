-- Quality and rejection rate by demographic group, each compared with the rest of its attribute:
-- a two-proportion z statistic for the rejection rate and a Welch z statistic for mean quality.
-- A group is flagged when either |z| exceeds z_crit (3.0 is about p < 0.003 two-sided, roughly a
-- Bonferroni 0.05 over 15 groups). This is the fairness question the MagFace paper leaves open:
-- does norm-as-quality reject some groups more than others?
-- requires: scores, attributes
-- param z_crit = 3.0 in 0..100: |z| above which a group is flagged
-- param min_images = 10 in 1..: groups with fewer images are listed but never flagged
WITH rows AS (
    SELECT v.attribute, v.value, s.keep, s.quality
    FROM scores s JOIN attributes v ON v.image_id = s.image_id
),
g AS (
    SELECT attribute, value, count(*) AS n, count(*) FILTER (WHERE NOT keep) AS rej,
           count(quality) AS nq, sum(quality) AS sq, sum(quality * quality) AS sqq
    FROM rows GROUP BY attribute, value
),
t AS (
    SELECT g.*, sum(n) OVER w AS tn, sum(rej) OVER w AS trej, sum(nq) OVER w AS tnq,
           sum(sq) OVER w AS tsq, sum(sqq) OVER w AS tsqq
    FROM g WINDOW w AS (PARTITION BY attribute)
),
c AS (
    SELECT attribute, value, n, rej, nq,
           rej / n AS rate, (trej - rej) / nullif(tn - n, 0) AS rate_rest,
           trej / tn AS rate_pooled, tn - n AS n_rest,
           sq / nullif(nq, 0) AS mq, (tsq - sq) / nullif(tnq - nq, 0) AS mq_rest,
           (sqq - sq * sq / nullif(nq, 0)) / nullif(nq - 1, 0) AS vq,
           ((tsqq - sqq) - (tsq - sq) * (tsq - sq) / nullif(tnq - nq, 0)) / nullif(tnq - nq - 1, 0) AS vq_rest,
           tnq - nq AS nq_rest
    FROM t
),
z AS (
    SELECT *,
           (rate - rate_rest) / nullif(sqrt(rate_pooled * (1 - rate_pooled) * (1.0 / n + 1.0 / n_rest)), 0) AS z_rejection,
           (mq - mq_rest) / nullif(sqrt(vq / nq + vq_rest / nq_rest), 0) AS z_quality
    FROM c
)
SELECT attribute, value, n AS images, nq AS faces,
       round(100 * rate, 2) AS pct_rejected, round(100 * rate_rest, 2) AS pct_rejected_rest,
       round(z_rejection, 2) AS z_rejection,
       round(mq, 2) AS mean_quality, round(mq_rest, 2) AS mean_quality_rest,
       round(z_quality, 2) AS z_quality,
       n >= $min_images AND (abs(coalesce(z_rejection, 0)) > $z_crit OR abs(coalesce(z_quality, 0)) > $z_crit) AS flagged
FROM z
ORDER BY attribute, n DESC, value;
