-- Label-noise rate per identity: of the faces that were embedded, the share rejected as label noise
-- (the reasons table's label-noise reasons: far from the dominant sub-center, closer to another
-- identity, or non-dominant), worst first.
-- requires: scores, identities
-- param min_images = 1 in 1..: only identities with at least this many images
-- param limit = 100 in 1..: rows to return
SELECT s.identity,
       count(*) AS images,
       count(s.angle_to_dominant) AS faces,
       count(*) FILTER (WHERE s.reason IN (SELECT name FROM reasons WHERE label_noise)) AS noisy,
       round(count(*) FILTER (WHERE s.reason IN (SELECT name FROM reasons WHERE label_noise))
             / greatest(count(s.angle_to_dominant), 1), 4) AS noise_rate,
       count(*) FILTER (WHERE s.keep) AS kept,
       round(any_value(i.dominant_share), 3) AS dominant_share,
       any_value(i.review) AS review,
       round(max(s.angle_to_dominant), 2) AS max_angle
FROM scores s LEFT JOIN identities i USING (identity)
GROUP BY s.identity
HAVING count(*) >= $min_images
ORDER BY noise_rate DESC, noisy DESC, s.identity
LIMIT $limit;
