-- A partition's kept result serves only a restart, and a restart continues
-- only the latest execution of its instance, and only if that did not
-- complete. Runs now clear their instance's results when they publish
-- (jobs::complete); this clears what earlier runs left behind: 69 MB for
-- every --all run at 100M plays, kept forever.
UPDATE partition_execution p SET result = NULL
WHERE p.result IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM job_execution e
    WHERE e.execution_id = p.execution_id
      AND (e.status = 'COMPLETED'
           OR EXISTS (SELECT 1 FROM job_execution l
                      WHERE l.instance_id = e.instance_id
                        AND l.execution_id > e.execution_id)));
