-- Rejection reasons: images removed by each reason, at which stage, from how many identities.
-- Stage 'spine' means the image never got a usable face (decode, detect); 'scoring' means the
-- face was embedded and then rejected (label noise, duplicate, quality).
-- requires: scores
SELECT reason,
       CASE WHEN reason = 'ok' THEN 'kept' WHEN spine_reason <> 'ok' THEN 'spine' ELSE 'scoring' END AS stage,
       count(*) AS images,
       round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS pct,
       count(DISTINCT identity) AS identities
FROM scores
GROUP BY ALL
ORDER BY images DESC, reason;
