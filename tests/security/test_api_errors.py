"""API clients get JSON in the API's error shape even where no view answers: an unknown /api/ path
(404) and an unexpected failure (500, whose details stay in the log). People get Django's pages."""

from django.test import Client, RequestFactory

from backflow.api_errors import server_error


def test_unknown_api_paths_answer_json(acme):
    for path in ("/api/nope/", "/api/integrations/a/b/c/", "/agent/mcp/nope"):
        response = acme.client().get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", (path, response.content)
        assert path in response.json()["detail"]
    page = Client().get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_server_errors_answer_json_to_api_clients():
    response = server_error(RequestFactory().get("/api/integrations/"))
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert "logged" in response.content.decode()
    assert server_error(RequestFactory().get("/admin/"))["Content-Type"].startswith("text/html")
