-- Re-tune the label-noise threshold without re-running a model: faces and identities that a
-- far-from-dominant angle of x degrees would reject, for x from angle_from to angle_to.
-- requires: scores
-- param angle_from = 10 in 0..180: first angle, degrees
-- param angle_to = 90 in 0..180: last angle, degrees
-- param step = 5 in 1..180: step, degrees
WITH faces AS (SELECT identity, angle_to_dominant AS a FROM scores WHERE angle_to_dominant IS NOT NULL),
     grid AS (SELECT x::DOUBLE AS angle FROM generate_series($angle_from::BIGINT, $angle_to::BIGINT, $step::BIGINT) t(x))
SELECT g.angle,
       count(f.a) AS faces_rejected,
       round(100.0 * count(f.a) / (SELECT greatest(count(*), 1) FROM faces), 2) AS pct_faces,
       count(DISTINCT f.identity) AS identities_touched
FROM grid g LEFT JOIN faces f ON f.a > g.angle
GROUP BY g.angle
ORDER BY g.angle;
