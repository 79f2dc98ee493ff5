"""Durable jobs for long recordings: submit, go away, come back (issue 15).

- :mod:`stts.jobs.store`: job records and checkpoints in SQLite (WAL), files beside it;
- :mod:`stts.jobs.steps`: the cut into steps and the join of their transcripts;
- :mod:`stts.jobs.runner`: runs queued jobs on the engine pools, below interactive work;
- :mod:`stts.jobs.webhooks`: signed callbacks to operator-allowed hosts only;
- :mod:`stts.jobs.probe`: the cheap look at an upload's header at submission;
- :mod:`stts.jobs.service`: :class:`JobService`, what faces call.
"""

from stts.jobs.service import JobsCollector, JobService
from stts.jobs.store import FINISHED, STATUSES, Job, NewJob

__all__ = ["FINISHED", "STATUSES", "Job", "JobService", "JobsCollector", "NewJob"]
