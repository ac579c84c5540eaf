-- Quality histogram (norm percentile, 0-100) of embedded faces, kept vs rejected.
-- requires: scores
-- param bins = 20 in 1..1000: number of equal-width bins over 0-100
WITH b AS (
    SELECT least(floor(quality * $bins / 100.0), $bins - 1)::INTEGER AS bin, keep
    FROM scores WHERE quality IS NOT NULL
)
SELECT bin,
       round(bin * 100.0 / $bins, 2) AS quality_from,
       round((bin + 1) * 100.0 / $bins, 2) AS quality_to,
       count(*) FILTER (WHERE keep) AS kept,
       count(*) FILTER (WHERE NOT keep) AS rejected
FROM b
GROUP BY bin
ORDER BY bin;
