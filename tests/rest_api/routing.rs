//! Unknown routes and wrong methods answer in the contract's error shape.

use super::*;

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_are_not_found_in_the_contract_shape() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    for path in ["/api/nope", "/api/conversations/x/y/z", "/nope"] {
        let reply = alice.get(path).await;
        reply.assert_error(404, "not_found");
        let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("application/json"), "{path}: {content_type}");
    }
}

#[tokio::test]
async fn a_wrong_method_on_a_known_route_is_405() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    for (method, path) in [
        (Method::PUT, "/api/conversations".to_owned()),
        (Method::DELETE, conversation_path(&id)),
        (Method::GET, read_path(&id)),
        (Method::POST, "/api/unread".to_owned()),
        (Method::GET, message_path("any")),
    ] {
        let reply = alice.call(method.clone(), &path, None).await;
        assert_eq!(reply.status.as_u16(), 405, "{method} {path}: {:?}", reply.body);
        assert!(reply.body["error"]["code"].is_string(), "{method} {path}: {:?}", reply.body);
    }
}
