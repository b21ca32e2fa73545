//! Liveness and readiness probes.

mod common;

use common::TestServer;

#[tokio::test]
async fn healthz_and_readyz_answer_on_a_fresh_server() {
    let server = TestServer::start().await;
    let anon = server.anonymous();
    assert_eq!(anon.get("/healthz").await.expect(200)["status"], "ok");
    assert_eq!(anon.get("/readyz").await.expect(200)["status"], "ready");
}

#[tokio::test]
async fn unknown_routes_answer_not_found_in_the_contract_shape() {
    let server = TestServer::start().await;
    server.anonymous().get("/api/nope").await.assert_error(404, "not_found");
}
