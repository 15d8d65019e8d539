"""Fault tests (issue #10): each fault gives a clear error, the service recovers once the fault
ends without a restart, and no committed data is lost. A test stops only processes it started.

Here:
- test_redis_restart.py: the Redis behind the cache and the channel layer stopped and restarted
  under a live SSE session (a private redis-server; the machine's Redis is never touched).
- test_postgres_drop.py: Postgres connections cut mid-transaction, refused for a while, and cut
  between requests, under daphne and a `run_worker` (a loopback proxy of the test's own in front
  of a private database).

Elsewhere:
- a db_worker killed mid-run (SIGKILL; the run is failed, never left running):
  workflows_app/tests/test_durable_runs.py::test_a_worker_killed_mid_run_leaves_the_run_failed
- an MCP peer killed (SIGKILL between calls; the next call starts it again), or gone and back:
  workflows_app/tests/test_mcp_steps.py::test_a_killed_stdio_server_is_started_again_by_the_next_call
  and ::test_an_http_server_that_went_away_is_reconnected_when_back; a peer killed mid-call with
  its worker is in the db_worker test above.
- an upstream that hangs (a 504 within the endpoint's timeout) or is down (a 502 naming the
  action): integrations_app/tests/test_runtime_faults.py::test_slow_upstream_beyond_the_endpoint_timeout_is_a_504
  and ::test_upstream_down_is_a_502_naming_the_action; an MCP tool that hangs:
  workflows_app/tests/test_mcp_steps.py::test_a_tool_running_past_the_step_timeout_fails_in_time
"""
