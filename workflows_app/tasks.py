from django.db import connections
from django_tasks import task

from workflows_app import engine


@task()
def execute_workflow_run(run_id):
    """Executed by `manage.py run_worker` (django-tasks-db); returns the run's final status.

    The worker loop checks its connection as it wakes up (close_old_connections, a health check on
    the next query) and claimed this task on it a moment ago: no second check before the run. After
    it, only a connection the run saw fail is checked (and dropped if dead), so that the task's own
    result is written on a working one; a health check after every run was one more round trip."""
    try:
        return engine.execute(run_id)
    finally:
        drop_failed_connections()


def drop_failed_connections():
    for connection in connections.all(initialized_only=True):
        if connection.errors_occurred:
            connection.close_if_unusable_or_obsolete()
