//! Socket.IO gateway, driven by the official `socket.io-client` from npm (tests/node): each
//! test starts a real server and runs one scenario of tests/node/driver.mjs against it.
//! The pinned client is installed with `npm ci` on first use if it is missing.

mod common;

use std::time::Duration;

use common::TestServer;
use common::node::scenario;

/// A server whose typing indicators expire after 1 s (the contract default is 5 s), so the
/// expiry scenario stays short; rate limiting is off.
async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.limits.typing_timeout = Duration::from_secs(1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_accepts_valid_tokens_from_auth_query_or_header_and_refuses_bad_ones_with_the_code() {
    scenario(&server().await, "auth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_acked_after_commit_and_reaches_the_other_member_and_the_senders_other_tab_once() {
    scenario(&server().await, "send_fanout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_auth_expired_and_a_server_disconnect_unless_auth_refresh_extended_it() {
    scenario(&server().await, "token_expiry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_conversation_refuses_sends_and_reactions_until_reopened() {
    scenario(&server().await, "read_only").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_reach_the_conversation() {
    scenario(&server().await, "edit_delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_reach_the_other_members_and_never_move_backwards() {
    scenario(&server().await, "read_receipts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_starts_stops_and_expires_and_stops_on_disconnect() {
    scenario(&server().await, "typing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_offline_only_when_the_last_tab_closes_and_only_contacts_hear_it() {
    scenario(&server().await, "presence").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_follow_focus_online_and_offline_branches() {
    let server = server().await;
    let result = scenario(&server, "notification_branches").await;
    let offline: Vec<&str> = result["offline_message_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id"))
        .collect();
    // Routing runs after the ack; give it a bounded moment to record the jobs, then a little
    // more for any job that should not be there.
    let deadline = tokio::time::Instant::now() + common::ws::WAIT;
    while tokio::time::Instant::now() < deadline {
        if server.state.store.pending_push_jobs(100).await.expect("outbox").len() >= offline.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let jobs = server.state.store.pending_push_jobs(100).await.expect("outbox");
    let owed: Vec<(&str, &str, i64)> =
        jobs.iter().map(|j| (j.user_id.as_str(), j.message_id.as_str(), j.seq)).collect();
    assert_eq!(
        owed,
        vec![("bob", offline[0], 3), ("bob", offline[1], 5)],
        "push jobs only for the offline branch, none while muted (message {})",
        result["muted_message_id"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_unfocus_wins_over_an_earlier_focus_still_checking_membership() {
    scenario(&server().await, "focus_order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_can_join_and_leave_unsubscribes_one_socket() {
    scenario(&server().await, "join_leave").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_members_are_subscribed_and_told_and_removed_members_stop_receiving() {
    scenario(&server().await, "membership_changes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_after_a_disconnect_returns_all_200_missed_messages_in_order_once() {
    scenario(&server().await, "sync_after_disconnect").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_get_error_acks_and_the_socket_stays_connected() {
    scenario(&server().await, "invalid_events").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_polling_transport_works() {
    scenario(&server().await, "polling_transport").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_use_chat_flow_works_end_to_end() {
    scenario(&server().await, "use_chat_flow").await;
}

/// Opens a raw Socket.IO (Engine.IO v4) WebSocket as `user` and waits for `ready`.
async fn raw_socket(
    server: &TestServer,
    user: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Frame;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    let auth = serde_json::json!({ "token": server.token(user) });
    socket.send(Frame::text(format!("40{auth}"))).await.expect("connect packet");
    loop {
        let frame = tokio::time::timeout(common::ws::WAIT, socket.next()).await.expect("ready in time");
        if let Some(Ok(Frame::Text(text))) = frame
            && text.starts_with("42[\"ready\"")
        {
            return socket;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_live_sockets_and_finishes_promptly() {
    use futures::StreamExt;
    let server = server().await;
    let mut socket = raw_socket(&server, "alice").await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(server.stop());
    // The client is told to go (a Socket.IO disconnect packet and/or the close of the socket).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the socket was not closed");
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("server stopped").expect("join");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_user_and_a_plain_websocket_user_see_each_others_messages_typing_receipts_and_presence() {
    let result = scenario(&server().await, "cross_transport").await;
    assert_eq!(result["seqs"], serde_json::json!([1, 2]));
}
