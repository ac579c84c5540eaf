-- Quality per identity (norm percentile, 0-100): mean, 10th percentile and median, before and
-- after curation; identities with the lowest kept quality first.
-- requires: scores
-- param min_images = 1 in 1..: only identities with at least this many embedded faces
-- param limit = 100 in 1..: rows to return
SELECT identity,
       count(quality) AS faces,
       count(quality) FILTER (WHERE keep) AS kept,
       round(avg(quality), 2) AS mean_quality,
       round(quantile_cont(quality, 0.1), 2) AS p10_quality,
       round(median(quality), 2) AS median_quality,
       round(avg(quality) FILTER (WHERE keep), 2) AS mean_quality_kept,
       round(quantile_cont(quality, 0.1) FILTER (WHERE keep), 2) AS p10_quality_kept
FROM scores
WHERE quality IS NOT NULL
GROUP BY identity
HAVING count(quality) >= $min_images
ORDER BY mean_quality_kept ASC NULLS FIRST, identity
LIMIT $limit;
