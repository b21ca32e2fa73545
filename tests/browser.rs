//! The bundled web page (`GET /`), driven in headless Chromium: each test starts a real
//! server and runs one scenario of tests/node/browser.mjs against it. The browser is Debian's
//! `/usr/bin/chromium` (`.ci/run` installs it), steered through the pinned `playwright-core`
//! from npm, which is installed with `npm ci` on first use; no browser is ever downloaded.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::TestServer;
use serde_json::Value;

/// The browser the scenarios drive.
const CHROMIUM: &str = "/usr/bin/chromium";

/// tests/node, with its npm dependencies installed (once per test run).
fn node_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
        if !dir.join("node_modules/playwright-core").exists()
            || !dir.join("node_modules/socket.io-client").exists()
        {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (Node.js and npm are needed for the browser tests)");
            assert!(status.success(), "npm ci in tests/node failed");
        }
        dir
    })
}

/// A fresh directory for one scenario's screenshots, under Cargo's target tmp dir.
fn screenshot_dir(scenario: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Runs one browser scenario against `server`; returns the JSON it printed, after checking
/// that every screenshot it reports exists in `shots` and is not empty.
async fn scenario(server: &TestServer, name: &str) -> Value {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser tests drive Debian's Chromium. `.ci/run` installs it; \
         by hand: apt-get update && apt-get install -y chromium"
    );
    let node_dir = node_dir();
    let shots = screenshot_dir(name);
    let secret = std::fs::read_to_string(server.data_dir.path().join("jwt-secret")).expect("jwt secret");
    let run = tokio::process::Command::new("node")
        .arg(node_dir.join("browser.mjs"))
        .arg(name)
        .env("CHATD_URL", &server.base)
        .env("CHATD_SECRET", secret.trim())
        .env("CHATD_SCREENSHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .unwrap_or_else(|_| panic!("browser scenario {name} did not finish within 150 s"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser scenario {name} failed:\n{stdout}\n{stderr}");
    let result: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("scenario result is JSON");
    let screenshots = result["screenshots"].as_array().expect("the scenario lists its screenshots");
    assert!(!screenshots.is_empty(), "no screenshot taken");
    for path in screenshots {
        let path = Path::new(path.as_str().expect("screenshot path"));
        assert!(path.starts_with(&shots), "{} is not in {}", path.display(), shots.display());
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "screenshot {} is missing or empty", path.display());
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_in_the_browser_with_typing_unread_receipts_escaping_edits_and_offline_catch_up() {
    let server = TestServer::start_with(|config| {
        config.dev = true;
        config.limits.messages_per_second = 0;
    })
    .await;
    scenario(&server, "chat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dev_mode_the_page_signs_in_with_a_pasted_token_and_signs_out_when_it_expires() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        // The keepalive sweep also closes expired sessions; run it every second.
        config.ws.ping_interval = Duration::from_secs(1);
    })
    .await;
    scenario(&server, "paste_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_refuses_a_wrong_key_and_shows_live_figures_with_the_right_one() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        // The key tests/node/browser.mjs types into the page.
        config.admin_key = Some("browser-admin-key-0123456789".into());
    })
    .await;
    let result = scenario(&server, "admin").await;
    assert_eq!(result["messages_per_minute"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_and_files_upload_with_progress_show_as_thumbnails_a_lightbox_and_file_chips() {
    let server = TestServer::start_with(|config| {
        config.dev = true;
        config.limits.messages_per_second = 0;
    })
    .await;
    scenario(&server, "media").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_react_reply_in_a_thread_pin_and_search_with_highlights_in_the_browser() {
    let server = TestServer::start_with(|config| {
        config.dev = true;
        config.limits.messages_per_second = 0;
    })
    .await;
    scenario(&server, "social").await;
}
