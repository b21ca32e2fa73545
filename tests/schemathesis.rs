//! Schemathesis (property-based API testing, from PyPI) against `GET /api/openapi.json` of a
//! real server: generated requests, valid and invalid, must get no 5xx, only documented
//! statuses, and responses (headers, content types, bodies) that conform to the document.
//!
//! Two runs: one with generated ids (unknown conversations, messages, devices), and one whose
//! path ids are bound to objects that exist (a group of the caller, one of its messages, a
//! device), so the operations' success paths are fuzzed too. The SSE stream is left out (it
//! never ends; tests/openapi.rs covers it).
//!
//! `.ci/run` installs the pinned schemathesis into a virtualenv at
//! `~/.cache/chatd-schemathesis` (`CHATD_SCHEMATHESIS` may name another executable).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use serde_json::json;

/// The version `.ci/run` installs.
const PINNED: &str = "4.32.5";
/// What every response must pass.
const CHECKS: [&str; 5] = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
];
/// Hard bound on each schemathesis run: it only stops a hung run, so it leaves a busy 2-core
/// machine room (a run takes well under a minute on an idle one).
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// How long schemathesis waits for one response before calling it a failure (generous for
/// the same reason).
const REQUEST_TIMEOUT_SECONDS: &str = "30";

/// The schemathesis executable, or a failure saying how to install it.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("CHATD_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let venv = home.join(".cache/chatd-schemathesis/bin/schemathesis");
    assert!(
        venv.is_file(),
        "schemathesis is not installed at {}. Install it (as .ci/run does):\n  \
         python3 -m venv ~/.cache/chatd-schemathesis && \
         ~/.cache/chatd-schemathesis/bin/pip install schemathesis=={PINNED}\n\
         or set CHATD_SCHEMATHESIS to a schemathesis executable.",
        venv.display()
    );
    venv
}

/// Runs schemathesis against `server` as `token`'s user, with an optional config file, and
/// fails with its output unless every check passed.
async fn run(server: &TestServer, token: &str, workdir: &Path, config: Option<&Path>) {
    let mut command = tokio::process::Command::new(schemathesis());
    command.current_dir(workdir).env("NO_COLOR", "1").kill_on_drop(true);
    if let Some(config) = config {
        command.arg("--config-file").arg(config);
    }
    command
        .arg("run")
        .arg(format!("{}/api/openapi.json", server.base))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .arg("--checks")
        .arg(CHECKS.join(","))
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--exclude-path", "/api/notifications/stream"])
        .args(["--max-examples", "40", "--seed", "20261124", "--request-timeout", REQUEST_TIMEOUT_SECONDS])
        .args(["--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap_or_else(|err| panic!("could not start schemathesis: {err}"));
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_LIMIT:?}"))
        .expect("schemathesis output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("passed"), "schemathesis ran no test case:\n{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_nonconforming_response() {
    let server = TestServer::start_with(|config| {
        config.dev = true;
        config.limits.messages_per_second = 0;
    })
    .await;
    let workdir = tempfile::tempdir().expect("temp dir");
    let alice = server.client("alice");
    let token = alice.token.clone().expect("token");

    run(&server, &token, workdir.path(), None).await;

    let group = alice.create("group", &["bob", "carol"]).await["id"].as_str().expect("id").to_owned();
    let message = alice.send(&group, "hello").await["id"].as_str().expect("id").to_owned();
    let device = alice.post("/api/devices", json!({ "platform": "fcm", "token": "t" })).await.expect(201);
    let device = device["id"].as_str().expect("id").to_owned();
    // Removals target carol, so the caller stays a member throughout.
    let config = format!(
        r#"[[operations]]
include-path-regex = "^/api/conversations/\\{{id\\}}"
parameters = {{ "path.id" = "{group}", "path.user_id" = "carol" }}

[[operations]]
include-path = "/api/messages/{{id}}"
parameters = {{ "path.id" = "{message}" }}

[[operations]]
include-path = "/api/devices/{{id}}"
parameters = {{ "path.id" = "{device}" }}
"#
    );
    let config_path = workdir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("write config");
    run(&server, &token, workdir.path(), Some(&config_path)).await;
}
