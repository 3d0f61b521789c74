"""The console's pages have addresses of their own: the gateway answers its one HTML page for
them, and a missing asset still answers 404."""

from tests.helpers import http
from trainyard.localstack import LocalStack


def test_page_addresses_serve_the_console_and_missing_assets_404(stack: LocalStack) -> None:
    stack.start_servers()
    stack.start_service("api")
    anonymous = http(stack, None)
    page = anonymous.get("/console/")
    assert page.status_code == 200 and 'src="/console/app.js"' in page.text
    for address in ("/console/new", "/console/datasets", f"/console/datasets/{'a' * 32}", "/console/compare",
                    "/console/sweeps/x", "/console/models"):
        answer = anonymous.get(address)
        assert answer.status_code == 200, address
        assert answer.headers["content-type"].startswith("text/html") and answer.text == page.text, address
    assert anonymous.get("/console/pages/router.js").headers["content-type"].startswith("text/javascript")
    assert anonymous.get("/console/pages/missing.js").status_code == 404
    assert anonymous.get("/console/new/styles.css").status_code == 404
