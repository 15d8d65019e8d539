from django.db import close_old_connections
from django_tasks import task

from workflows_app import engine


@task()
def execute_workflow_run(run_id):
    """Executed by `manage.py run_worker` (django-tasks-db); returns the run's final status."""
    close_old_connections()
    try:
        return engine.execute(run_id)
    finally:
        close_old_connections()
