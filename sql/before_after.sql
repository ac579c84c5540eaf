-- Before vs after curation: images, identities, faces per identity, quality and label-noise angle.
-- requires: scores
WITH per_id AS (
    SELECT identity, count(*) AS n, count(*) FILTER (WHERE keep) AS n_kept FROM scores GROUP BY identity
)
SELECT 'before' AS stage,
       (SELECT count(*) FROM scores) AS images,
       (SELECT count(*) FROM per_id) AS identities,
       (SELECT round(median(n), 1) FROM per_id) AS median_images_per_identity,
       (SELECT round(avg(quality), 2) FROM scores) AS mean_quality,
       (SELECT round(avg(angle_to_dominant), 2) FROM scores) AS mean_angle_to_dominant,
       (SELECT round(max(angle_to_dominant), 2) FROM scores) AS max_angle_to_dominant
UNION ALL
SELECT 'after',
       (SELECT count(*) FROM scores WHERE keep),
       (SELECT count(*) FROM per_id WHERE n_kept > 0),
       (SELECT round(median(n_kept), 1) FROM per_id WHERE n_kept > 0),
       (SELECT round(avg(quality), 2) FROM scores WHERE keep),
       (SELECT round(avg(angle_to_dominant), 2) FROM scores WHERE keep),
       (SELECT round(max(angle_to_dominant), 2) FROM scores WHERE keep);
