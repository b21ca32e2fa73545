//! Bearer authentication on every `/api` route: which tokens are accepted and which are refused
//! with which error.

use super::*;

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_api_route_requires_a_bearer_token() {
    let server = TestServer::start().await;
    let alice = server.client("alice");
    let id = group(&alice, &["bob"]).await;
    let message = id_of(&alice.send(&id, "hi").await);
    let routes = [
        (Method::POST, "/api/conversations".to_owned(), Some(json!({ "type": "group", "members": [] }))),
        (Method::GET, "/api/conversations".to_owned(), None),
        (Method::GET, conversation_path(&id), None),
        (Method::PATCH, conversation_path(&id), Some(json!({ "name": "x" }))),
        (Method::POST, members_path(&id), Some(json!({ "user_ids": ["carol"] }))),
        (Method::DELETE, member_path(&id, "bob"), None),
        (Method::GET, messages_path(&id), None),
        (Method::POST, messages_path(&id), Some(json!({ "content": "hi" }))),
        (Method::PATCH, message_path(&message), Some(json!({ "content": "x" }))),
        (Method::DELETE, message_path(&message), None),
        (Method::POST, read_path(&id), Some(json!({ "seq": 1 }))),
        (Method::PUT, notifications_path(&id), Some(json!({ "enabled": false }))),
        (Method::GET, "/api/unread".to_owned(), None),
    ];
    let anonymous = server.anonymous();
    let basic = alice.clone();
    for (method, path, body) in routes {
        anonymous.call(method.clone(), &path, body.clone()).await.assert_error(401, "unauthorized");
        // A token in another scheme is no bearer token.
        let mut req = basic.http.request(method.clone(), format!("{}{path}", basic.base));
        req = req.header("authorization", format!("Basic {}", alice.token.as_deref().unwrap()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401, "{method} {path} with Basic auth");
    }
    // Nothing above changed anything.
    let conversation = alice.get(&conversation_path(&id)).await.expect(200);
    assert_eq!(member_ids(&conversation).len(), 2);
    assert_eq!(conversation["name"], Value::Null);
    assert_eq!(seqs(&history(&alice, &id, "").await), vec![1]);
}

#[tokio::test]
async fn a_token_crafted_with_the_servers_secret_is_accepted() {
    let server = TestServer::start().await;
    let token = sign(Algorithm::HS256, &claims("alice", unix_now() + 3600), &server_secret(&server));
    let client = server.anonymous().with_token(&token);
    let created = client.create("group", &["bob"]).await;
    assert_eq!(role_of(&created, "alice"), "owner");
}

/// One bearer token the server must refuse, and the error code it must refuse it with.
struct RefusedToken {
    case: &'static str,
    token: String,
    code: &'static str,
}

/// Every kind of token the contract refuses: malformed, forged, expired, unsigned, signed with
/// another algorithm, or missing a claim it needs.
fn refused_tokens(server: &TestServer) -> Vec<RefusedToken> {
    // base64url of {"alg":"none","typ":"JWT"}, valid claims, empty signature.
    const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let secret = server_secret(server);
    let valid = server.token("alice");
    let claims_part = valid.split('.').nth(1).expect("claims segment").to_owned();
    let refused = |case, token, code| RefusedToken { case, token, code };
    vec![
        refused("garbage", "garbage".to_owned(), "unauthorized"),
        refused("three segments that are no JWT", "a.b.c".to_owned(), "unauthorized"),
        refused("a header without claims or signature", "eyJhbGciOiJIUzI1NiJ9...".to_owned(), "unauthorized"),
        refused(
            "signed with another secret",
            sign(Algorithm::HS256, &claims("alice", unix_now() + 3600), b"not-the-server-secret-at-all-0123"),
            "unauthorized",
        ),
        refused(
            "expired an hour ago",
            sign(Algorithm::HS256, &claims("alice", unix_now() - 3600), &secret),
            "token_expired",
        ),
        refused("alg none with an empty signature", format!("{NONE_HEADER}.{claims_part}."), "unauthorized"),
        refused(
            "alg none without a signature segment",
            format!("{NONE_HEADER}.{claims_part}"),
            "unauthorized",
        ),
        refused(
            "HS384 with the server's secret",
            sign(Algorithm::HS384, &claims("alice", unix_now() + 3600), &secret),
            "unauthorized",
        ),
        refused(
            "HS512 with the server's secret",
            sign(Algorithm::HS512, &claims("alice", unix_now() + 3600), &secret),
            "unauthorized",
        ),
        refused("without exp", sign(Algorithm::HS256, &json!({ "sub": "alice" }), &secret), "unauthorized"),
        refused(
            "without sub",
            sign(Algorithm::HS256, &json!({ "exp": unix_now() + 3600 }), &secret),
            "unauthorized",
        ),
        refused(
            "with an empty sub",
            sign(Algorithm::HS256, &json!({ "sub": "", "exp": unix_now() + 3600 }), &secret),
            "unauthorized",
        ),
    ]
}

#[tokio::test]
async fn tokens_the_contract_refuses_get_401_with_their_error_code() {
    let server = TestServer::start().await;
    for RefusedToken { case, token, code } in refused_tokens(&server) {
        let reply = server.anonymous().with_token(&token).get("/api/conversations").await;
        assert_eq!(reply.status.as_u16(), 401, "{case}: status of {:?}", reply.body);
        assert_eq!(reply.code(), code, "{case}: code of {:?}", reply.body);
        assert!(reply.body["error"]["message"].is_string(), "{case}: message of {:?}", reply.body);
    }
}
