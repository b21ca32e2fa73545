//! The `chatd` command line (help, `token`, `migrate`, configuration precedence, clear
//! failures) and token verification options (RS256/ES256 public keys, `aud`/`iss`), driven
//! through the real binary and real HTTP.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use chatd::config::Config;
use common::node::SioClient;
use common::{Client, ServerProcess, TestServer, chatd_command, run_bounded};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

fn chatd() -> Command {
    chatd_command()
}

fn run(command: &mut Command) -> Output {
    run_bounded(command)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `chatd token ...` and returns the printed token, asserting success.
fn mint_with(command: &mut Command) -> String {
    let output = run(command);
    assert!(output.status.success(), "chatd token failed: {}", stderr(&output));
    let token = stdout(&output).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    token
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims of `token` if `secret` signed it (HS256), else `None`.
fn hs256_claims(token: &str, secret: &[u8]) -> Option<Value> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret), &validation)
        .ok()
        .map(|d| d.claims)
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("sign")
}

fn claims_for(user: &str) -> Value {
    json!({ "sub": user, "exp": now() + 3600 })
}

/// Whether the server accepts `token` on an authenticated REST route; asserts the contract's
/// 401 `unauthorized` otherwise.
async fn accepted(server: &TestServer, token: &str) -> bool {
    let reply = server.anonymous().with_token(token).get("/api/conversations").await;
    if reply.status.as_u16() == 200 {
        return true;
    }
    reply.assert_error(401, "unauthorized");
    false
}

/// A client for `token` that can create a conversation and send in it.
async fn assert_usable(client: &Client, user: &str) {
    let conversation = client.create("group", &["someone-else"]).await;
    let owner = &conversation["members"][0];
    assert_eq!(owner["user_id"], user);
    assert_eq!(owner["role"], "owner");
    let message = client.send(conversation["id"].as_str().unwrap(), "hello").await;
    assert_eq!(message["sender_id"], user);
}

// ---------------------------------------------------------------------------------------
// Help

#[test]
fn help_lists_the_serve_token_and_migrate_subcommands() {
    let output = run(chatd().arg("--help"));
    assert!(output.status.success(), "{}", stderr(&output));
    let help = stdout(&output);
    for subcommand in ["serve", "token", "migrate"] {
        assert!(
            help.lines().any(|line| line.trim_start().starts_with(subcommand)),
            "`chatd --help` does not list {subcommand}:\n{help}"
        );
    }
}

#[test]
fn serve_help_documents_every_contract_setting_flag_and_its_env_name() {
    let output = run(chatd().args(["serve", "--help"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let help = stdout(&output);
    for (flag, env) in [
        ("--bind", "CHATD_BIND"),
        ("--data-dir", "CHATD_DATA_DIR"),
        ("--database-url", "CHATD_DATABASE_URL"),
        ("--redis-url", "CHATD_REDIS_URL"),
        ("--jwt-secret", "CHATD_JWT_SECRET"),
        ("--jwt-public-key", "CHATD_JWT_PUBLIC_KEY"),
        ("--jwt-audience", "CHATD_JWT_AUDIENCE"),
        ("--jwt-issuer", "CHATD_JWT_ISSUER"),
        ("--admin-key", "CHATD_ADMIN_KEY"),
        ("--dev", "CHATD_DEV"),
        ("--config", "CHATD_CONFIG"),
    ] {
        assert!(help.contains(&format!("{flag} ")), "`chatd serve --help` lacks {flag}:\n{help}");
        assert!(help.contains(env), "`chatd serve --help` lacks {env}:\n{help}");
    }
}

#[test]
fn token_help_documents_name_and_ttl() {
    let output = run(chatd().args(["token", "--help"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let help = stdout(&output);
    for flag in ["--name", "--ttl", "--data-dir", "--jwt-secret", "--config"] {
        assert!(help.contains(flag), "`chatd token --help` lacks {flag}:\n{help}");
    }
}

// ---------------------------------------------------------------------------------------
// chatd token and where it finds the key

#[tokio::test]
async fn a_cli_token_is_accepted_by_a_server_on_the_same_data_dir() {
    let data_dir = tempfile::tempdir().unwrap();
    let token = mint_with(
        chatd().args(["token", "alice", "--name", "Alice", "--ttl", "1h", "--data-dir"]).arg(data_dir.path()),
    );

    // The generated secret lives in the data dir and signed the token.
    let secret = std::fs::read_to_string(data_dir.path().join("jwt-secret")).expect("generated jwt-secret");
    let claims = hs256_claims(&token, secret.trim().as_bytes()).expect("signed with <data-dir>/jwt-secret");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice");
    let exp = claims["exp"].as_u64().expect("exp");
    let expected = now() + 3600;
    assert!(exp.abs_diff(expected) < 120, "--ttl 1h: exp {exp}, expected about {expected}");

    let mut config = Config::with_data_dir(data_dir.path()).unwrap();
    config.limits.messages_per_second = 0;
    let server = TestServer::start_in(data_dir, config).await;
    assert!(accepted(&server, &token).await, "the server must accept the CLI's token");
    assert_usable(&server.anonymous().with_token(&token), "alice").await;
}

#[tokio::test]
async fn a_server_started_first_generates_the_secret_the_cli_then_signs_with() {
    let server = TestServer::start().await;
    let data_dir = server.data_dir.path().to_owned();
    assert!(data_dir.join("jwt-secret").is_file(), "the server generated <data-dir>/jwt-secret");
    let token = mint_with(chatd().args(["token", "bob", "--data-dir"]).arg(&data_dir));
    assert!(accepted(&server, &token).await);
}

#[test]
fn concurrent_first_use_of_a_fresh_data_dir_agrees_on_one_secret() {
    // Several `chatd token` (or `serve`) processes starting together on a fresh data dir must
    // not fail or sign with different secrets. Repeated because the window is small.
    for round in 0..10 {
        let data_dir = tempfile::tempdir().unwrap();
        let children: Vec<_> = (0..8)
            .map(|n| {
                chatd()
                    .args(["token", &format!("user{n}"), "--data-dir"])
                    .arg(data_dir.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn chatd token")
            })
            .collect();
        let outputs: Vec<Output> =
            children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect();
        let secret = std::fs::read_to_string(data_dir.path().join("jwt-secret")).expect("jwt-secret");
        for (n, output) in outputs.iter().enumerate() {
            assert!(output.status.success(), "round {round}: chatd token #{n} failed: {}", stderr(output));
            let token = stdout(output).trim().to_owned();
            let claims = hs256_claims(&token, secret.trim().as_bytes())
                .unwrap_or_else(|| panic!("round {round}: token #{n} not signed with the kept secret"));
            assert_eq!(claims["sub"], format!("user{n}"));
        }
        let leftovers: Vec<_> = std::fs::read_dir(data_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "jwt-secret")
            .collect();
        assert!(leftovers.is_empty(), "round {round}: stray files in the data dir: {leftovers:?}");
    }
}

#[test]
fn the_cli_signs_with_the_secret_given_in_chatd_jwt_secret() {
    let data_dir = tempfile::tempdir().unwrap();
    let secret = "env-secret-0123456789abcdef";
    let token = mint_with(
        chatd().args(["token", "alice", "--data-dir"]).arg(data_dir.path()).env("CHATD_JWT_SECRET", secret),
    );
    let claims = hs256_claims(&token, secret.as_bytes()).expect("signed with CHATD_JWT_SECRET");
    assert_eq!(claims["sub"], "alice");
    assert!(!data_dir.path().join("jwt-secret").exists(), "no secret is generated when one is configured");
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("chatd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_cli_takes_jwt_secret_from_the_config_file_when_flags_and_env_do_not_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &format!(
            "jwt_secret = \"file-secret-0123456789abcdef\"\ndata_dir = {:?}\n",
            data_dir.to_str().unwrap()
        ),
    );
    let token = mint_with(chatd().args(["token", "alice", "--config"]).arg(&config));
    assert!(hs256_claims(&token, b"file-secret-0123456789abcdef").is_some(), "signed with the file's secret");
    assert!(!data_dir.join("jwt-secret").exists(), "no secret generated when the file gives one");
}

#[test]
fn a_jwt_secret_flag_wins_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "jwt_secret = \"file-secret-0123456789abcdef\"\n");
    let token = mint_with(
        chatd()
            .args(["token", "alice", "--jwt-secret", "flag-secret-0123456789abcdef", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data")),
    );
    assert!(hs256_claims(&token, b"flag-secret-0123456789abcdef").is_some(), "the flag's secret signed it");
    assert!(hs256_claims(&token, b"file-secret-0123456789abcdef").is_none(), "not the file's");
}

#[test]
fn chatd_jwt_secret_in_the_environment_wins_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "jwt_secret = \"file-secret-0123456789abcdef\"\n");
    let token = mint_with(
        chatd()
            .args(["token", "alice", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("CHATD_JWT_SECRET", "env-secret-0123456789abcdef"),
    );
    assert!(hs256_claims(&token, b"env-secret-0123456789abcdef").is_some(), "the env's secret signed it");
    assert!(hs256_claims(&token, b"file-secret-0123456789abcdef").is_none(), "not the file's");
}

#[test]
fn a_jwt_secret_flag_wins_over_chatd_jwt_secret_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token = mint_with(
        chatd()
            .args(["token", "alice", "--jwt-secret", "flag-secret-0123456789abcdef", "--data-dir"])
            .arg(dir.path())
            .env("CHATD_JWT_SECRET", "env-secret-0123456789abcdef"),
    );
    assert!(hs256_claims(&token, b"flag-secret-0123456789abcdef").is_some(), "the flag's secret signed it");
}

#[test]
fn an_unknown_key_in_the_config_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "jwt_secrt = \"typo-secret-0123456789abcdef\"\n");
    let output =
        run(chatd().args(["token", "alice", "--config"]).arg(&config).arg("--data-dir").arg(dir.path()));
    assert!(!output.status.success(), "a typo in the config file must not be ignored");
    let message = stderr(&output);
    assert!(message.contains("chatd.toml") && message.contains("jwt_secrt"), "stderr: {message}");
}

#[tokio::test]
async fn a_cli_token_carries_the_configured_audience_and_issuer() {
    let data_dir = tempfile::tempdir().unwrap();
    let token = mint_with(
        chatd()
            .args(["token", "alice", "--jwt-audience", "chat-api", "--jwt-issuer", "https://platform.test"])
            .arg("--data-dir")
            .arg(data_dir.path()),
    );
    let secret = std::fs::read_to_string(data_dir.path().join("jwt-secret")).unwrap();
    let claims = hs256_claims(&token, secret.trim().as_bytes()).unwrap();
    assert_eq!(claims["aud"], "chat-api");
    assert_eq!(claims["iss"], "https://platform.test");

    let mut config = Config::with_data_dir(data_dir.path()).unwrap();
    config.jwt.audience = Some("chat-api".into());
    config.jwt.issuer = Some("https://platform.test".into());
    let server = TestServer::start_in(data_dir, config).await;
    assert!(accepted(&server, &token).await);
}

// ---------------------------------------------------------------------------------------
// RS256 / ES256 with a PEM public key

/// (private PKCS#8 PEM, public SPKI PEM)
type KeyPair = (String, String);

fn rsa_keypair(slot: &'static OnceLock<KeyPair>) -> &'static KeyPair {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    slot.get_or_init(|| {
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
        let public = rsa::RsaPublicKey::from(&private);
        (
            private.to_pkcs8_pem(LineEnding::LF).expect("private PEM").to_string(),
            public.to_public_key_pem(LineEnding::LF).expect("public PEM"),
        )
    })
}

fn rsa_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    rsa_keypair(&KEY)
}

fn other_rsa_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    rsa_keypair(&KEY)
}

fn p256_keypair() -> KeyPair {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = p256::SecretKey::random(&mut rand_core::OsRng);
    (
        private.to_pkcs8_pem(LineEnding::LF).expect("private PEM").to_string(),
        private.public_key().to_public_key_pem(LineEnding::LF).expect("public PEM"),
    )
}

/// A server verifying with the public key `public_pem` only (no shared secret).
async fn public_key_server(public_pem: &str) -> (TestServer, tempfile::TempDir) {
    let key_dir = tempfile::tempdir().unwrap();
    let path = key_dir.path().join("jwt-public.pem");
    std::fs::write(&path, public_pem).unwrap();
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.jwt.public_key = Some(path);
        config.jwt.secret = None;
    })
    .await;
    (server, key_dir)
}

#[tokio::test]
async fn an_rs256_token_signed_with_the_private_key_is_accepted() {
    let (private, public) = rsa_key();
    let (server, _keys) = public_key_server(public).await;
    let token =
        sign(Algorithm::RS256, &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(), &claims_for("alice"));
    assert!(accepted(&server, &token).await, "RS256 token signed with the matching private key");
    assert_usable(&server.anonymous().with_token(&token), "alice").await;
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_pem_is_rejected() {
    let (_, public) = rsa_key();
    let (server, _keys) = public_key_server(public).await;
    // Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret.
    let token = sign(Algorithm::HS256, &EncodingKey::from_secret(public.as_bytes()), &claims_for("alice"));
    assert!(!accepted(&server, &token).await, "HS256 must not be accepted when an RSA key is configured");
}

#[tokio::test]
async fn an_rs256_token_signed_with_another_rsa_key_is_rejected() {
    let (_, public) = rsa_key();
    let (other_private, _) = other_rsa_key();
    let (server, _keys) = public_key_server(public).await;
    let token = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(other_private.as_bytes()).unwrap(),
        &claims_for("alice"),
    );
    assert!(!accepted(&server, &token).await, "a signature by another key must be rejected");
}

#[tokio::test]
async fn an_es256_token_signed_with_the_private_key_is_accepted() {
    let (private, public) = p256_keypair();
    let (server, _keys) = public_key_server(&public).await;
    let token =
        sign(Algorithm::ES256, &EncodingKey::from_ec_pem(private.as_bytes()).unwrap(), &claims_for("bob"));
    assert!(accepted(&server, &token).await, "ES256 token signed with the matching private key");
    assert_usable(&server.anonymous().with_token(&token), "bob").await;
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_ec_public_pem_is_rejected() {
    let (_, public) = p256_keypair();
    let (server, _keys) = public_key_server(&public).await;
    let token = sign(Algorithm::HS256, &EncodingKey::from_secret(public.as_bytes()), &claims_for("bob"));
    assert!(!accepted(&server, &token).await, "HS256 must not be accepted when an EC key is configured");
}

#[tokio::test]
async fn an_es256_token_is_rejected_by_a_server_configured_with_an_rsa_key() {
    let (_, rsa_public) = rsa_key();
    let (ec_private, _) = p256_keypair();
    let (server, _keys) = public_key_server(rsa_public).await;
    let token =
        sign(Algorithm::ES256, &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(), &claims_for("bob"));
    assert!(!accepted(&server, &token).await, "only the configured algorithm is accepted");
}

#[test]
fn the_cli_refuses_to_mint_with_only_a_public_key_and_says_why() {
    let (_, public) = p256_keypair();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt-public.pem");
    std::fs::write(&path, public).unwrap();
    let output = run(chatd()
        .args(["token", "alice", "--jwt-public-key"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path()));
    assert!(!output.status.success(), "no token can be minted without a private key");
    assert!(stdout(&output).trim().is_empty(), "nothing printed as a token: {}", stdout(&output));
    assert!(stderr(&output).contains("public key"), "stderr: {}", stderr(&output));
}

// ---------------------------------------------------------------------------------------
// aud / iss

const SECRET: &str = "aud-iss-test-secret-0123456789";
const AUDIENCE: &str = "chat-api";
const ISSUER: &str = "https://platform.test";

async fn aud_iss_server() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.messages_per_second = 0;
        config.jwt.secret = Some(SECRET.into());
        config.jwt.audience = Some(AUDIENCE.into());
        config.jwt.issuer = Some(ISSUER.into());
    })
    .await
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()), claims)
}

#[tokio::test]
async fn a_token_with_the_configured_aud_and_iss_is_accepted() {
    let server = aud_iss_server().await;
    let token = hs256(&json!({ "sub": "alice", "exp": now() + 3600, "aud": AUDIENCE, "iss": ISSUER }));
    assert!(accepted(&server, &token).await);
    // The server's own minting adds them too.
    assert!(accepted(&server, &server.token("bob")).await);
}

#[tokio::test]
async fn an_aud_array_containing_the_configured_audience_is_accepted() {
    let server = aud_iss_server().await;
    // RFC 7519 §4.1.3: `aud` may be an array of audiences.
    let token =
        hs256(&json!({ "sub": "alice", "exp": now() + 3600, "aud": ["billing", AUDIENCE], "iss": ISSUER }));
    assert!(accepted(&server, &token).await);
}

#[tokio::test]
async fn a_token_with_the_wrong_aud_is_unauthorized() {
    let server = aud_iss_server().await;
    let token = hs256(&json!({ "sub": "alice", "exp": now() + 3600, "aud": "other-api", "iss": ISSUER }));
    assert!(!accepted(&server, &token).await);
    let token = hs256(
        &json!({ "sub": "alice", "exp": now() + 3600, "aud": ["other-api", "billing"], "iss": ISSUER }),
    );
    assert!(!accepted(&server, &token).await);
}

#[tokio::test]
async fn a_token_without_aud_is_unauthorized_when_an_audience_is_configured() {
    let server = aud_iss_server().await;
    let token = hs256(&json!({ "sub": "alice", "exp": now() + 3600, "iss": ISSUER }));
    assert!(!accepted(&server, &token).await);
}

#[tokio::test]
async fn a_token_with_the_wrong_iss_is_unauthorized() {
    let server = aud_iss_server().await;
    let token =
        hs256(&json!({ "sub": "alice", "exp": now() + 3600, "aud": AUDIENCE, "iss": "https://evil.test" }));
    assert!(!accepted(&server, &token).await);
}

#[tokio::test]
async fn a_token_without_iss_is_unauthorized_when_an_issuer_is_configured() {
    let server = aud_iss_server().await;
    let token = hs256(&json!({ "sub": "alice", "exp": now() + 3600, "aud": AUDIENCE }));
    assert!(!accepted(&server, &token).await);
}

// ---------------------------------------------------------------------------------------
// The reserved subject and tokens not valid yet

const PLAIN_SECRET: &str = "plain-test-secret-0123456789";

async fn plain_server() -> TestServer {
    TestServer::start_with(|config| config.jwt.secret = Some(PLAIN_SECRET.into())).await
}

fn plain(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(PLAIN_SECRET.as_bytes()), claims)
}

/// Asserts that REST, the `/ws`, SSE and Socket.IO handshakes all refuse `token` with 401
/// `unauthorized`.
async fn assert_refused_everywhere(server: &TestServer, token: &str) {
    assert!(!accepted(server, token).await, "REST");
    match tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", server.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401, "/ws");
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("JSON body");
            assert_eq!(body["error"]["code"], "unauthorized", "/ws: {body}");
        }
        other => panic!("/ws: expected a refused upgrade, got {:?}", other.map(|(_, r)| r.status())),
    }
    let sse = server
        .http
        .get(format!("{}/api/notifications/stream?token={token}", server.base))
        .send()
        .await
        .expect("SSE request");
    assert_eq!(sse.status().as_u16(), 401, "SSE");
    let body: Value = sse.json().await.expect("JSON body");
    assert_eq!(body["error"]["code"], "unauthorized", "SSE: {body}");
    assert_eq!(SioClient::refused(&server.base, token).await, "unauthorized", "Socket.IO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_the_reserved_system_subject_is_unauthorized_on_rest_and_every_handshake() {
    let server = plain_server().await;
    assert!(accepted(&server, &plain(&claims_for("alice"))).await);
    assert_refused_everywhere(&server, &plain(&claims_for("system"))).await;
    assert!(server.state.auth.mint("system", None, std::time::Duration::from_secs(60)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_nbf_is_in_the_future_is_unauthorized_on_rest_and_every_handshake() {
    let server = plain_server().await;
    let valid_since = plain(&json!({ "sub": "alice", "exp": now() + 3600, "nbf": now() - 60 }));
    assert!(accepted(&server, &valid_since).await);
    let later = plain(&json!({ "sub": "alice", "exp": now() + 7200, "nbf": now() + 3600 }));
    assert_refused_everywhere(&server, &later).await;
}

// ---------------------------------------------------------------------------------------
// chatd migrate and configuration failures

#[tokio::test]
async fn migrate_creates_the_database_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("fresh");
    let output = run(chatd().arg("migrate").arg("--data-dir").arg(&data_dir));
    assert!(output.status.success(), "chatd migrate failed: {}", stderr(&output));
    let db = data_dir.join("chatd.db");
    assert!(db.is_file(), "{} not created", db.display());

    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert!(version >= 1, "migrations applied (user_version {version})");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in ["conversations", "members", "messages"] {
        assert!(tables.iter().any(|t| t == table), "table {table} missing: {tables:?}");
    }
    drop(conn);

    // Migrating again is harmless, and a server runs on the migrated database.
    let again = run(chatd().arg("migrate").arg("--data-dir").arg(&data_dir));
    assert!(again.status.success(), "second migrate failed: {}", stderr(&again));
    let mut config = Config::with_data_dir(&data_dir).unwrap();
    config.limits.messages_per_second = 0;
    let server = TestServer::start_in(dir, config).await;
    assert_usable(&server.client("alice"), "alice").await;
}

/// Runs `chatd serve` with `args` on a throwaway data dir and port; it must fail.
fn serve_must_fail(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = run(chatd()
        .arg("serve")
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .current_dir(dir.path()));
    assert!(!output.status.success(), "chatd serve {args:?} must exit non-zero");
    let message = stderr(&output);
    assert!(!message.trim().is_empty(), "chatd serve {args:?} must say why on stderr");
    message
}

#[test]
fn serve_with_a_postgres_database_url_exits_non_zero_with_a_message() {
    let message = serve_must_fail(&["--database-url", "postgres://x"]);
    assert!(message.contains("PostgreSQL") || message.contains("database-url"), "stderr: {message}");
}

#[test]
fn serve_with_an_unknown_database_url_scheme_exits_non_zero_with_a_message() {
    let message = serve_must_fail(&["--database-url", "mysql://x"]);
    assert!(message.contains("database-url"), "stderr: {message}");
}

#[test]
fn serve_with_an_unreachable_redis_exits_non_zero_with_a_message() {
    // Port 1 on loopback: nothing listens there.
    let message = serve_must_fail(&["--redis-url", "redis://127.0.0.1:1"]);
    assert!(message.contains("Redis at redis://127.0.0.1:1"), "stderr: {message}");
}

#[test]
fn serve_with_an_unknown_redis_url_scheme_exits_non_zero_with_a_message() {
    let message = serve_must_fail(&["--redis-url", "http://127.0.0.1:6379"]);
    assert!(message.contains("redis-url"), "stderr: {message}");
}

#[test]
fn serve_with_a_too_short_jwt_secret_exits_non_zero_with_a_message() {
    let message = serve_must_fail(&["--jwt-secret", "short"]);
    assert!(message.contains("16 bytes"), "stderr: {message}");
}

#[test]
fn serve_with_a_missing_public_key_file_exits_non_zero_with_a_message() {
    let message = serve_must_fail(&["--jwt-public-key", "/nonexistent/jwt-public.pem"]);
    assert!(message.contains("/nonexistent/jwt-public.pem"), "stderr: {message}");
}

#[test]
fn serve_with_a_public_key_file_that_is_not_a_key_exits_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-key.pem");
    std::fs::write(&path, "hello").unwrap();
    let message = serve_must_fail(&["--jwt-public-key", path.to_str().unwrap()]);
    assert!(message.contains("public key"), "stderr: {message}");
}

#[test]
fn a_sqlite_database_url_puts_the_database_at_that_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("elsewhere").join("chat.sqlite");
    let output = run(chatd()
        .arg("migrate")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--database-url")
        .arg(format!("sqlite:{}", db.display())));
    assert!(output.status.success(), "chatd migrate failed: {}", stderr(&output));
    assert!(db.is_file(), "{} not created", db.display());
    assert!(!dir.path().join("data").join("chatd.db").exists(), "no database in the data dir");
}

#[tokio::test]
async fn serve_dev_enables_the_dev_token_endpoint_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        dir.path(),
        &["--dev", "--data-dir", data.to_str().unwrap()],
        dir.path().join("log"),
    )
    .await;
    let body = server
        .anonymous()
        .post("/api/dev/token", json!({ "user_id": "alice", "name": "Alice" }))
        .await
        .expect(200);
    let token = body["token"].as_str().expect("token");
    let client = server.client(token);
    assert_eq!(client.get("/api/conversations").await.status.as_u16(), 200);
    let secret = std::fs::read_to_string(data.join("jwt-secret")).unwrap();
    let claims = hs256_claims(token, secret.trim().as_bytes()).expect("signed with the server's secret");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice");
    assert!(server.log_text().contains("DEVELOPMENT MODE"), "a warning is printed:\n{}", server.log_text());
}

#[tokio::test]
async fn serve_without_dev_has_no_dev_token_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server =
        ServerProcess::start(dir.path(), &["--data-dir", data.to_str().unwrap()], dir.path().join("log"))
            .await;
    server
        .anonymous()
        .post("/api/dev/token", json!({ "user_id": "alice" }))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn serve_reads_chatd_dev_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start_with_env(
        dir.path(),
        &["--data-dir", data.to_str().unwrap()],
        &[("CHATD_DEV", "true")],
        dir.path().join("log"),
    )
    .await;
    let body = server.anonymous().post("/api/dev/token", json!({ "user_id": "alice" })).await.expect(200);
    assert!(body["token"].is_string());
}
