//! The Socket.IO client side of the tests: scenarios of tests/node/driver.mjs, run with the
//! official `socket.io-client` from npm (installed with `npm ci` on first use if missing).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::TestServer;

/// tests/node, with its npm dependencies installed (once per test run).
fn node_driver_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
        if !dir.join("node_modules/socket.io-client").exists() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (Node.js and npm are needed for the Socket.IO tests)");
            assert!(status.success(), "npm ci in tests/node failed");
        }
        dir
    })
}

/// Runs one driver scenario against `server`; returns the JSON it printed.
pub async fn scenario(server: &TestServer, name: &str) -> Value {
    scenario_with_env(server, name, &[]).await
}

/// [`scenario`] with extra environment variables for the driver.
pub async fn scenario_with_env(server: &TestServer, name: &str, env: &[(&str, &str)]) -> Value {
    let node_dir = node_driver_dir();
    let secret = std::fs::read_to_string(server.data_dir.path().join("jwt-secret")).expect("jwt secret");
    let run = tokio::process::Command::new("node")
        .arg("--experimental-websocket") // the plain-WS client of `cross_transport` (Node 20)
        .arg(node_dir.join("driver.mjs"))
        .arg(name)
        .env("CHATD_URL", &server.base)
        .env("CHATD_SECRET", secret.trim())
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .unwrap_or_else(|_| panic!("scenario {name} did not finish"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scenario {name} failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("scenario result is JSON")
}
