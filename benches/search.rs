//! Search latency at scale (issue 19): `GET /api/search` p50/p99/max over a store of
//! `BENCH_MESSAGES` (default 1,000,000) messages, on SQLite and on PostgreSQL.
//!
//! The store is filled directly, not through the API (a million sends would take minutes):
//! `chatd migrate` creates the schema (a temp SQLite file; a fresh PostgreSQL schema
//! `bench_search_<pid>`, dropped at the end), then the bench inserts conversations, members
//! and messages in big transactions (SQLite: each message's text into the FTS5 index
//! `messages_search` with the message's rowid, as `store/sqlite/appends.rs` does; PostgreSQL:
//! `COPY`, the `pg_trgm` index maintained as rows arrive, then `VACUUM ANALYZE` as autovacuum
//! would). The data is a marketplace: 20,000 group conversations (60 % of two members, the
//! rest 3 to 20), users in about 50 conversations each, a few conversations much busier than most,
//! messages over a year in Korean, English or both, made from word lists with a seeded RNG
//! (the same data on both stores).
//!
//! Then the real `chatd` binary serves that store and two users search, one request at a
//! time on a keep-alive connection, each query `BENCH_REQUESTS` times (default 200, after 5
//! unmeasured; a row stops early after 30 s): a two-syllable Korean word and a two-letter
//! English one (too short for a trigram index: `LIKE` over the caller's newest messages),
//! a three-syllable Korean word, a common English word and a rare one (trigram indexes).
//! The typical user (about 50 conversations) searches all of them and within their busiest;
//! the shop (a member of every 40th conversation and a few more: 542) searches all of
//! theirs. Prints a markdown table; asserts nothing.
//!
//! `cargo bench --bench search`; env `BENCH_MESSAGES`, `BENCH_REQUESTS`, `BENCH_STORES`
//! (`sqlite,postgres` by default), `CHATD_BENCH_PG` (default
//! `postgres://127.0.0.1:5432/test`) and `BENCH_KEEP=1` to keep the SQLite file and the
//! PostgreSQL schema afterwards (for `EXPLAIN`; their names are printed).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::SinkExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{Server, percentile_ms, tokens};

/// Conversations in the store.
const CONVERSATIONS: usize = 20_000;
/// Conversations a user is in, on average.
const CONVERSATIONS_PER_USER: usize = 50;
/// Seed of everything generated.
const SEED: u64 = 19;
/// The user who is a shop: a member of one conversation in [`SHOP_EVERY`].
const SHOP: u32 = 0;
/// See [`SHOP`].
const SHOP_EVERY: usize = 40;
/// Longest a table row may take measuring; it stops early when this has passed.
const ROW_TIME: Duration = Duration::from_secs(30);
/// Messages inserted per transaction (SQLite) or `COPY` chunk (PostgreSQL).
const BATCH: usize = 50_000;

/// Korean words as chat writes them, particles attached.
const KOREAN: &[&str] = &[
    "안녕하세요",
    "반갑습니다",
    "감사합니다",
    "네",
    "아직",
    "판매",
    "중인가요",
    "거래는",
    "직거래",
    "가능한가요",
    "택배로",
    "택배비는",
    "택배거래",
    "보내주세요",
    "가격은",
    "얼마인가요",
    "네고",
    "가능할까요",
    "내일",
    "오늘",
    "저녁에",
    "역",
    "앞에서",
    "만나요",
    "상품",
    "상태는",
    "어떤가요",
    "사진",
    "더",
    "있나요",
    "입금",
    "했습니다",
    "계좌",
    "알려주세요",
    "배송비",
    "포함인가요",
    "완료",
    "됐나요",
    "구매",
    "원해요",
    "중고",
    "새상품",
    "박스",
    "미개봉",
    "사용감",
    "조금",
    "있어요",
    "괜찮습니다",
    "좋아요",
    "확인",
    "부탁드려요",
    "주말에",
    "시간",
    "되세요",
    "근처",
    "사시나요",
    "예약",
    "할게요",
    "검색을",
    "해보세요",
    "문의",
    "드립니다",
    "정품",
    "인가요",
    "편의점",
    "반값택배",
    "가능해요",
    "죄송합니다",
    "다른",
    "분께",
    "팔렸어요",
    "만원",
    "깎아",
    "주실",
];

/// English words of the same conversations.
const ENGLISH: &[&str] = &[
    "hi",
    "hello",
    "is",
    "this",
    "still",
    "available",
    "price",
    "negotiable",
    "shipping",
    "pickup",
    "tomorrow",
    "condition",
    "like",
    "new",
    "thanks",
    "can",
    "you",
    "send",
    "more",
    "photos",
    "meet",
    "at",
    "the",
    "station",
    "deal",
    "ok",
    "sure",
    "how",
    "much",
    "box",
    "included",
    "iphone",
    "bike",
    "sofa",
    "camera",
    "lens",
    "table",
    "chair",
    "please",
    "tonight",
    "weekend",
    "cash",
    "transfer",
    "paid",
    "sold",
    "sorry",
    "already",
    "reserved",
    "for",
    "me",
    "would",
    "take",
    "it",
    "great",
    "works",
    "perfectly",
    "any",
    "scratches",
    "battery",
    "health",
    "original",
    "receipt",
    "where",
    "are",
    "located",
    "near",
    "subway",
    "exit",
    "i",
    "will",
    "be",
    "there",
    "in",
    "minutes",
    "lol",
];

/// Words in about one message in 8,000 (one of these per such message).
const RARE: &[&str] = &["tripod", "harmonica", "snowboard", "typewriter"];

/// The queries measured: text, and what it exercises.
const QUERIES: &[(&str, &str)] = &[
    ("택배", "Korean, 2 syllables (LIKE scan)"),
    ("ok", "English, 2 letters (LIKE scan)"),
    ("택배로", "Korean, 3 syllables (trigram index)"),
    ("price", "English, common (trigram index)"),
    ("tripod", "English, rare (trigram index)"),
];

/// One conversation of the generated store.
struct Conversation {
    id: String,
    /// User numbers, the owner first.
    members: Vec<u32>,
    created_at: i64,
    /// Messages, i.e. its last seq.
    messages: u32,
    last_message_at: Option<i64>,
}

/// One message's place; its text comes from [`TextSource`] in insertion order.
struct Placed {
    conversation: u32,
    seq: u32,
    sender: u32,
    created_at: i64,
}

/// The generated store, without message texts.
struct Dataset {
    users: usize,
    conversations: Vec<Conversation>,
    /// In insertion order: by time, as a live store would have received them.
    messages: Vec<Placed>,
}

/// `user{n}`.
fn user_id(n: u32) -> String {
    format!("user{n:05}")
}

/// A UUIDv7-shaped id: `millis` in the leading 48 bits (so ids sort by time, like chatd's),
/// `n` (unique per kind) and `kind` in the rest.
fn time_id(millis: i64, kind: u16, n: u64) -> String {
    let ms = u64::try_from(millis).unwrap_or(0);
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        (n >> 48) & 0xfff,
        0x8000 | (kind & 0x3fff),
        n & 0xffff_ffff_ffff
    )
}

impl Dataset {
    fn generate(messages: usize) -> Dataset {
        let mut rng = StdRng::seed_from_u64(SEED);
        let year = 365 * 24 * 3600 * 1000_i64;
        let end = chatd::core::time::Timestamp::now().millis() - 24 * 3600 * 1000;
        let start = end - year;
        let sizes: Vec<usize> = (0..CONVERSATIONS)
            .map(|_| if rng.random_bool(0.6) { 2 } else { rng.random_range(3..=20) })
            .collect();
        let users = (sizes.iter().sum::<usize>() / CONVERSATIONS_PER_USER).max(20);
        let mut conversations: Vec<Conversation> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut members: Vec<u32> = Vec::with_capacity(size + 1);
                // The shop (user 0) sells in one conversation in SHOP_EVERY.
                if i % SHOP_EVERY == 0 {
                    members.push(SHOP);
                }
                while members.len() < size {
                    let user = rng.random_range(0..users as u32);
                    if !members.contains(&user) {
                        members.push(user);
                    }
                }
                let created_at = start + rng.random_range(0..year * 4 / 5);
                Conversation {
                    id: time_id(created_at, 1, i as u64),
                    members,
                    created_at,
                    messages: 0,
                    last_message_at: None,
                }
            })
            .collect();
        // Skewed activity: a few conversations hold many messages, most a handful.
        let weights: Vec<f64> = (0..CONVERSATIONS).map(|_| rng.random::<f64>().powi(3)).collect();
        let total: f64 = weights.iter().sum();
        let mut counts: Vec<usize> = weights.iter().map(|w| (w / total * messages as f64) as usize).collect();
        let short = messages - counts.iter().sum::<usize>();
        for count in counts.iter_mut().take(short) {
            *count += 1;
        }
        let mut placed = Vec::with_capacity(messages);
        for (i, (conversation, &count)) in conversations.iter_mut().zip(&counts).enumerate() {
            let mut times: Vec<i64> =
                (0..count).map(|_| rng.random_range(conversation.created_at + 1..end)).collect();
            times.sort_unstable();
            for (seq, &created_at) in times.iter().enumerate() {
                let sender = *conversation.members.choose(&mut rng).unwrap_or(&0);
                placed.push(Placed { conversation: i as u32, seq: seq as u32 + 1, sender, created_at });
            }
            conversation.messages = count as u32;
            conversation.last_message_at = times.last().copied();
        }
        placed.sort_by_key(|m| (m.created_at, m.conversation, m.seq));
        Dataset { users, conversations, messages: placed }
    }

    /// Who searches: the user whose conversation count is nearest
    /// [`CONVERSATIONS_PER_USER`], and the shop.
    fn searchers(&self) -> Vec<Searcher> {
        let mut of_user = vec![Vec::new(); self.users];
        for (i, conversation) in self.conversations.iter().enumerate() {
            for &member in &conversation.members {
                of_user[member as usize].push(i);
            }
        }
        let typical = (0..self.users)
            .filter(|&u| u != SHOP as usize)
            .min_by_key(|&u| of_user[u].len().abs_diff(CONVERSATIONS_PER_USER))
            .unwrap_or_default();
        let searcher = |user: usize, label: &'static str, filter: bool| {
            let theirs = &of_user[user];
            let busiest = theirs.iter().max_by_key(|&&c| self.conversations[c].messages);
            Searcher {
                user: user as u32,
                label,
                conversations: theirs.len(),
                messages: theirs.iter().map(|&c| self.conversations[c].messages).sum(),
                busiest: busiest
                    .filter(|_| filter)
                    .map(|&c| (self.conversations[c].id.clone(), self.conversations[c].messages)),
            }
        };
        vec![searcher(typical, "typical user", true), searcher(SHOP as usize, "shop", false)]
    }
}

/// A user who searches, and what they can search.
struct Searcher {
    user: u32,
    label: &'static str,
    /// Conversations they are in.
    conversations: usize,
    /// Messages in those.
    messages: u32,
    /// Their busiest conversation and its messages, to search within it too.
    busiest: Option<(String, u32)>,
}

/// Message texts in insertion order; the same sequence every time it is made.
struct TextSource {
    rng: StdRng,
    text: String,
}

impl TextSource {
    fn new() -> TextSource {
        TextSource { rng: StdRng::seed_from_u64(SEED + 1), text: String::new() }
    }

    /// The next message's text.
    fn next_text(&mut self) -> &str {
        let rng = &mut self.rng;
        let text = &mut self.text;
        text.clear();
        let roll: f64 = rng.random();
        let (korean, english) = match roll {
            r if r < 0.65 => (rng.random_range(2..=9), 0),
            r if r < 0.90 => (0, rng.random_range(2..=12)),
            _ => (rng.random_range(1..=5), rng.random_range(1..=5)),
        };
        let mut push = |word: &str| {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(word);
        };
        for _ in 0..korean {
            push(KOREAN.choose(rng).unwrap_or(&""));
        }
        for _ in 0..english {
            push(ENGLISH.choose(rng).unwrap_or(&""));
        }
        if rng.random_bool(1.0 / 8_000.0) {
            push(RARE.choose(rng).unwrap_or(&""));
        }
        if rng.random_bool(0.1) {
            let price = rng.random_range(1..=50) * 1_000;
            push(&format!("{price}원"));
        }
        &self.text
    }
}

/// How many messages of the store contain each query (case-insensitive), counted from
/// the generated texts.
fn matches_in_store(messages: usize) -> Vec<usize> {
    let mut texts = TextSource::new();
    let mut counts = vec![0; QUERIES.len()];
    for _ in 0..messages {
        let text = texts.next_text().to_lowercase();
        for (count, (query, _)) in counts.iter_mut().zip(QUERIES) {
            if text.contains(query) {
                *count += 1;
            }
        }
    }
    counts
}

/// `chatd migrate` with `args`.
fn migrate(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("migrate")
        .args(args)
        .env("CHATD_LOG", "warn")
        .status()
        .context("running chatd migrate")?;
    anyhow::ensure!(status.success(), "chatd migrate: {status}");
    Ok(())
}

/// Fills the migrated SQLite database at `path`.
fn fill_sqlite(path: &Path, data: &Dataset) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON;")?;
    let tx = conn.transaction()?;
    {
        let mut conversation = tx.prepare(
            "INSERT INTO conversations (id, type, name, last_seq, last_message_at, activity_at, created_at) \
             VALUES (?1, 'group', ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut member = tx.prepare(
            "INSERT INTO members (conversation_id, user_id, role, joined_at, last_read_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (i, c) in data.conversations.iter().enumerate() {
            let activity = c.last_message_at.unwrap_or(c.created_at);
            conversation.execute(rusqlite::params![
                c.id,
                format!("listing {i}"),
                c.messages,
                c.last_message_at,
                activity,
                c.created_at
            ])?;
            for (n, &user) in c.members.iter().enumerate() {
                let role = if n == 0 { "owner" } else { "member" };
                member.execute(rusqlite::params![c.id, user_id(user), role, c.created_at, c.messages])?;
            }
        }
    }
    tx.commit()?;
    let mut texts = TextSource::new();
    for (batch, chunk) in data.messages.chunks(BATCH).enumerate() {
        let tx = conn.transaction()?;
        {
            let mut message = tx.prepare_cached(
                "INSERT INTO messages (id, conversation_id, seq, sender_id, type, content, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6)",
            )?;
            let mut index =
                tx.prepare_cached("INSERT INTO messages_search (rowid, content) VALUES (?1, ?2)")?;
            for (n, m) in chunk.iter().enumerate() {
                let text = texts.next_text();
                let id = time_id(m.created_at, 2, (batch * BATCH + n) as u64);
                let conversation = &data.conversations[m.conversation as usize].id;
                message.execute(rusqlite::params![
                    id,
                    conversation,
                    m.seq,
                    user_id(m.sender),
                    text,
                    m.created_at
                ])?;
                index.execute(rusqlite::params![tx.last_insert_rowid(), text])?;
            }
        }
        tx.commit()?;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// A field for PostgreSQL's `COPY … FROM STDIN` text format.
fn copy_field(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Sends `rows` (COPY text format) into `COPY {target} FROM STDIN`.
async fn copy_rows(client: &tokio_postgres::Client, target: &str, rows: String) -> anyhow::Result<()> {
    let sink = client.copy_in::<_, Bytes>(&format!("COPY {target} FROM STDIN")).await?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(rows)).await?;
    sink.finish().await?;
    Ok(())
}

/// Fills the migrated PostgreSQL schema `schema`.
async fn fill_postgres(base_url: &str, schema: &str, data: &Dataset) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(base_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(&format!("SET search_path TO {schema}")).await?;
    let mut conversations = String::new();
    let mut members = String::new();
    for (i, c) in data.conversations.iter().enumerate() {
        let last = c.last_message_at.map_or("\\N".to_owned(), |t| t.to_string());
        let activity = c.last_message_at.unwrap_or(c.created_at);
        conversations.push_str(&format!(
            "{}\tgroup\tlisting {i}\t{}\t{last}\t{activity}\t{}\n",
            c.id, c.messages, c.created_at
        ));
        for (n, &user) in c.members.iter().enumerate() {
            let role = if n == 0 { "owner" } else { "member" };
            members.push_str(&format!(
                "{}\t{}\t{role}\t{}\t{}\n",
                c.id,
                user_id(user),
                c.created_at,
                c.messages
            ));
        }
    }
    copy_rows(
        &client,
        "conversations (id, type, name, last_seq, last_message_at, activity_at, created_at)",
        conversations,
    )
    .await?;
    copy_rows(&client, "members (conversation_id, user_id, role, joined_at, last_read_seq)", members).await?;
    let mut texts = TextSource::new();
    for (batch, chunk) in data.messages.chunks(BATCH).enumerate() {
        let mut rows = String::with_capacity(chunk.len() * 160);
        for (n, m) in chunk.iter().enumerate() {
            let id = time_id(m.created_at, 2, (batch * BATCH + n) as u64);
            let conversation = &data.conversations[m.conversation as usize].id;
            rows.push_str(&format!("{id}\t{conversation}\t{}\t{}\ttext\t", m.seq, user_id(m.sender)));
            copy_field(&mut rows, texts.next_text());
            rows.push_str(&format!("\t{}\n", m.created_at));
        }
        copy_rows(&client, "messages (id, conversation_id, seq, sender_id, type, content, created_at)", rows)
            .await?;
    }
    client.batch_execute("VACUUM ANALYZE conversations, members, messages").await?;
    Ok(())
}

/// `base` with chatd's `schema=` parameter.
fn with_schema(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}schema={schema}")
}

/// Drops the bench's PostgreSQL schema.
async fn drop_schema(base_url: &str, schema: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(base_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
    Ok(())
}

/// One table row: a query's latencies and what its first page held.
struct Measured {
    query: &'static str,
    what: &'static str,
    searcher: &'static str,
    scope: String,
    results: usize,
    more: bool,
    first_ms: f64,
    sorted: Vec<Duration>,
}

/// Runs `query` `requests` times (after 5 unmeasured; fewer when [`ROW_TIME`] runs out) as
/// `token`, optionally within `conversation`: the first page's size, whether a next page
/// followed, the first request's time and the measured times, sorted.
async fn measure(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    conversation: Option<&str>,
    requests: usize,
) -> anyhow::Result<(usize, bool, f64, Vec<Duration>)> {
    let mut params = vec![("q", query), ("limit", "20")];
    if let Some(conversation) = conversation {
        params.push(("conversation_id", conversation));
    }
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/search"), &params)?;
    let mut times = Vec::with_capacity(requests);
    let (mut results, mut more, mut first_ms) = (0, false, 0.0);
    let started_row = Instant::now();
    for n in 0..requests + 5 {
        if n > 5 && started_row.elapsed() > ROW_TIME {
            break;
        }
        let started = Instant::now();
        let response = http.get(url.clone()).bearer_auth(token).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(status.is_success(), "search {query:?}: {status} {body}");
        if n == 0 {
            results = body["results"].as_array().map_or(0, Vec::len);
            more = !body["next_cursor"].is_null();
            first_ms = elapsed.as_secs_f64() * 1e3;
        }
        if n >= 5 {
            times.push(elapsed);
        }
    }
    times.sort();
    Ok((results, more, first_ms, times))
}

/// Measures every query against `server` as each searcher.
async fn run_queries(
    server: &Server,
    searchers: &[Searcher],
    requests: usize,
) -> anyhow::Result<Vec<Measured>> {
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let mut rows = Vec::new();
    for searcher in searchers {
        let token = tokens(&[user_id(searcher.user)])?.remove(0);
        let mut scopes = vec![(None, format!("all {} ({} msgs)", searcher.conversations, searcher.messages))];
        if let Some((id, messages)) = &searcher.busiest {
            scopes.push((Some(id.as_str()), format!("one ({messages} msgs)")));
        }
        for &(query, what) in QUERIES {
            for (conversation, scope) in &scopes {
                let (results, more, first_ms, sorted) =
                    measure(&http, &base, &token, query, *conversation, requests).await?;
                let scope = scope.clone();
                rows.push(Measured {
                    query,
                    what,
                    searcher: searcher.label,
                    scope,
                    results,
                    more,
                    first_ms,
                    sorted,
                });
            }
        }
    }
    Ok(rows)
}

fn print_table(store: &str, rows: &[Measured]) {
    println!("\n### {store}\n");
    println!("| query | what | searcher | conversations | page 1 | requests | first | p50 | p99 | max |");
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| `{}` | {} | {} | {} | {}{} | {} | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            row.query,
            row.what,
            row.searcher,
            row.scope,
            row.results,
            if row.more { "+" } else { "" },
            row.sorted.len(),
            row.first_ms,
            percentile_ms(&row.sorted, 0.5),
            percentile_ms(&row.sorted, 0.99),
            row.sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.replace('_', "").parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let messages = env_number("BENCH_MESSAGES", 1_000_000);
    let requests = env_number("BENCH_REQUESTS", 200).max(1);
    let stores = std::env::var("BENCH_STORES").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let keep = std::env::var_os("BENCH_KEEP").is_some();
    let pg_base =
        std::env::var("CHATD_BENCH_PG").unwrap_or_else(|_| "postgres://127.0.0.1:5432/test".to_owned());

    let started = Instant::now();
    let data = Dataset::generate(messages);
    let searchers = data.searchers();
    let members: usize = data.conversations.iter().map(|c| c.members.len()).sum();
    println!(
        "## search at {messages} messages: {} conversations, {} users, {members} memberships \
         (generated in {:.1} s)",
        data.conversations.len(),
        data.users,
        started.elapsed().as_secs_f64()
    );
    for searcher in &searchers {
        println!(
            "{} {}: {} conversations, {} messages",
            searcher.label,
            user_id(searcher.user),
            searcher.conversations,
            searcher.messages
        );
    }
    println!("{requests} sequential requests per row (at most {} s), limit 20", ROW_TIME.as_secs());
    let counts = matches_in_store(messages);
    let listed: Vec<String> = QUERIES.iter().zip(&counts).map(|((q, _), n)| format!("{q} {n}")).collect();
    println!("messages of the store containing each query: {}", listed.join(", "));
    println!("load average at start: {}", load_average());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        if stores.contains("sqlite") {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("search.db");
            let url = format!("sqlite:{}", path.display());
            migrate(&["--database-url", &url])?;
            let filling = Instant::now();
            fill_sqlite(&path, &data)?;
            let fill_secs = filling.elapsed().as_secs_f64();
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            println!("\nSQLite filled in {fill_secs:.1} s ({:.0} MB)", size as f64 / 1e6);
            let server = Server::start_with(&["--database-url", &url, "--search-budget", "0/1"]).await?;
            let rows = run_queries(&server, &searchers, requests).await?;
            print_table("SQLite", &rows);
            if keep {
                println!("kept {}", dir.keep().join("search.db").display());
            }
        }
        if stores.contains("postgres") {
            let schema = format!("bench_search_{}", std::process::id());
            let url = with_schema(&pg_base, &schema);
            let result = async {
                migrate(&["--database-url", &url, "--media-dir-shared"])?;
                let filling = Instant::now();
                fill_postgres(&pg_base, &schema, &data).await?;
                println!(
                    "\nPostgreSQL filled in {:.1} s (VACUUM ANALYZE included)",
                    filling.elapsed().as_secs_f64()
                );
                let server = Server::start_with(&[
                    "--database-url",
                    &url,
                    "--media-dir-shared",
                    "--search-budget",
                    "0/1",
                ])
                .await?;
                let rows = run_queries(&server, &searchers, requests).await?;
                print_table("PostgreSQL", &rows);
                anyhow::Ok(())
                // The server stops here, before its schema is dropped.
            }
            .await;
            if keep {
                println!("kept schema {schema}");
            } else {
                drop_schema(&pg_base, &schema).await?;
            }
            result?;
        }
        println!("\nload average at end: {}", load_average());
        anyhow::Ok(())
    })
}

/// /proc/loadavg's first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
